# DO NOT EDIT: generated from job_machine/_async/__init__.py by tools/async_to_sync.py.
# Change the async source and run `python tools/async_to_sync.py`.
"""The core, in two faces: job_machine/_async/ is written by hand, and
job_machine/_sync/ is generated from it by tools/async_to_sync.py.
"""
