"""Complete training jobs built on ember's public API."""
