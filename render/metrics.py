"""Names shared by what writes metrics (backup role, drill) and what alerts on them (monitoring role)."""

# node_exporter's textfile collector directory on Debian (prometheus-node-exporter's default).
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

# Unix time of the last successful borgmatic run on a client; label `repository` (the client host).
BACKUP_LAST_SUCCESS = "hypha_backup_last_success_timestamp_seconds"
# Unix time of the last restore drill that passed, per repository, written on the backup target.
DRILL_LAST_SUCCESS = "hypha_restore_drill_last_success_timestamp_seconds"
# 1 when the last drill of a repository passed, 0 when it failed.
DRILL_OK = "hypha_restore_drill_ok"
# Size on disk of each borg repository, and free space of the filesystem that holds them.
REPOSITORY_SIZE = "hypha_borg_repository_size_bytes"
REPOSITORY_FREE = "hypha_borg_filesystem_free_bytes"
