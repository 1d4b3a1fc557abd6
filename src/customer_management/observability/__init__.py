"""What the service tells its operators: the Prometheus endpoint and OpenTelemetry tracing."""
