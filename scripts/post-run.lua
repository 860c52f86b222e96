-- wrk script: every request starts a dry run.
wrk.method = "POST"
wrk.body = '{"dry_run": true}'
wrk.headers["Content-Type"] = "application/json"
