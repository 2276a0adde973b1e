# shardline %pre: the shardline system user and group, also in the groups adm (to
# read /var/log) and systemd-journal (to read the journal) where the host has
# them, before the files are laid down.
getent group shardline >/dev/null || groupadd -r shardline
if ! getent passwd shardline >/dev/null; then
    useradd -r -g shardline -d /var/lib/shardline -M -s /sbin/nologin \
        -c "shardline log forwarder" shardline
fi
for g in adm systemd-journal; do
    if getent group "$g" >/dev/null && ! id -nG shardline | tr ' ' '\n' | grep -qx "$g"; then
        usermod -a -G "$g" shardline
    fi
done
exit 0
