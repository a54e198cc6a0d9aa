"""The core, in two faces: job_machine/_async/ is written by hand, and
job_machine/_sync/ is generated from it by tools/async_to_sync.py.
"""
