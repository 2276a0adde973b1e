# shardline %postun: systemd forgets the removed unit. The spool
# (/var/lib/shardline) and the shardline user stay, as RPM leaves them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
