"""Integrations with frameworks: job_machine.contrib.django (docs/django.md)."""
