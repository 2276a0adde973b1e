# shardline %post: the spool directory, and systemd told about the unit. A fresh
# install does not enable or start the agent (the config names the stream
# first); an upgrade ($1 = 2) restarts it if it runs.
install -d -o shardline -g shardline -m 0750 /var/lib/shardline
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 2 ]; then
        systemctl try-restart shardline.service >/dev/null 2>&1 || :
    fi
fi
exit 0
