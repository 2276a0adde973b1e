# shardline %preun: on removal ($1 = 0, not an upgrade) the agent is stopped,
# gracefully: what is not yet delivered stays in /var/lib/shardline.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now shardline.service >/dev/null 2>&1 || :
fi
exit 0
