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
# The target's own judgement of each repository (borg-target watch/prune): 1 while it is marked
# tampered (client-side harm found and rolled back), when it was last verified, and per job
# (label `task`: watch, prune; not `job`, which Prometheus sets) whether the last run on the repository succeeded.
REPOSITORY_TAMPERED = "hypha_borg_repository_tampered"
REPOSITORY_VERIFIED = "hypha_borg_repository_verified_timestamp_seconds"
TARGET_JOB_OK = "hypha_borg_target_job_ok"
# The storage quota borg serve enforces on each repository (bytes).
REPOSITORY_QUOTA = "hypha_borg_repository_quota_bytes"
# The proxy's access log through mtail (templates/reverse_proxy/access.mtail.j2): HTTPS requests per
# virtual host (label `vhost`, the server's canonical name) and status class (`code_class`: 2xx…5xx),
# and redirects the link shortener answered, per keyword (`keyword`, lower case).
HTTP_REQUESTS = "hypha_http_requests_total"
SHORTLINK_HITS = "hypha_shortlink_hits_total"
