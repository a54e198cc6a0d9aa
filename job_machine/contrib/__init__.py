"""job_machine inside the frameworks users run: Django's tasks
(:mod:`job_machine.contrib.django`, docs/django.md), FastAPI/Starlette
(:mod:`job_machine.contrib.fastapi`), Flask (:mod:`job_machine.contrib.flask`).

Each module imports its framework only when used; none is a dependency of
job_machine.
"""
