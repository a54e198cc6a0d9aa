"""The async implementation: the one hand-written source of the core.

job_machine/_sync/ is generated from these modules by tools/async_to_sync.py.
"""
