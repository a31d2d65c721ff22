"""The I/O shell around the pure core: every socket lives here.

Faust worker and recovery, the summary wire format, topics, the notifier and
action services, the one HTTP egress, webhook signing, the HTTP API and the
Prometheus collectors.
"""
