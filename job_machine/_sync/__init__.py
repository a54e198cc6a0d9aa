# DO NOT EDIT: generated from job_machine/_async/__init__.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The async implementation: the one hand-written source of the core.

job_machine/_sync/ is generated from these modules by tools/async_to_sync.py.
"""
