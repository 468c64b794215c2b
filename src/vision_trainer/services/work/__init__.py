"""The job machinery: claim, heartbeat, retry through database outages, progress, cancellation, the end
of a job and its recovery. It knows no kind of job by name: a job's kind (``services.kinds``) says what
its params are, what it works on and how it runs."""
