"""``install`` (and its alias ``migrate``) and ``roles``: the schema and the
least-privilege roles."""

from __future__ import annotations

import click

import job_machine as jm

from .._dsn import describe_target
from ._common import _dsn_option, _need_dsn

# -- install --------------------------------------------------------------------


def _schema_version(dsn: str) -> int | None:
    """The installed schema version, None when there is none."""
    with jm.Admin(dsn) as admin:
        return admin.schema_version()


@click.command()
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL (sql/create_tables.sql) instead of running it; needs no database.",
)
@_dsn_option
def install(print_sql: bool, dsn: str | None) -> None:
    """Install or upgrade the jobmachine schema.

    Idempotent: run it at every deploy. On a database that has the schema,
    job_machine's or Perl Job::Machine's, it upgrades in place and loses
    nothing. Prints the schema version before and after. `migrate` is the
    same command.
    """
    if print_sql:
        click.echo(jm.create_tables_sql(), nl=False)
        return
    target = _need_dsn(dsn)
    before = _schema_version(target)
    jm.install_schema(target)
    after = _schema_version(target)
    if before is None:
        what = "installed the jobmachine schema"
    elif before != after:
        what = "upgraded the jobmachine schema"
    else:
        what = "the jobmachine schema is up to date"
    shown = "none" if before is None else str(before)
    click.echo(f"{what}: version {shown} -> {after} ({describe_target(target)})")


migrate = click.Command(
    "migrate",
    callback=install.callback,
    params=install.params,
    help="Install or upgrade the jobmachine schema: the same as `install`.",
    short_help="The same as install.",
)


# -- roles ----------------------------------------------------------------------


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return jm.Roles(value).prefix
    except ValueError as ex:
        raise click.BadParameter(str(ex), ctx=ctx, param=param) from None


@click.command()
@click.option(
    "--prefix",
    default=jm.Roles().prefix,
    show_default=True,
    callback=_check_prefix,
    help="The roles are PREFIX_sender, _worker, _reader and _admin (roles are cluster-wide: "
    "one prefix per application of a shared cluster).",
)
@click.option(
    "--print",
    "print_sql",
    is_flag=True,
    help="Print the SQL (sql/roles.sql) instead of running it; needs no database.",
)
@_dsn_option
def roles(prefix: str, print_sql: bool, dsn: str | None) -> None:
    """Create the least-privilege group roles, or grant them again.

    PREFIX_sender sends tasks and reads replies, PREFIX_worker runs workers,
    PREFIX_reader reads everything and writes nothing, PREFIX_admin is the
    reader plus an operator's actions (docs/roles.md); GRANT them to your
    login users. Idempotent: run it after every `install`, since an upgrade
    may add tables or columns. Run it as the schema's owner; the first run
    also needs CREATEROLE. With --print, set the prefix with
    PGOPTIONS='-c jobmachine.role_prefix=PREFIX' when you run the SQL.
    """
    if print_sql:
        click.echo(jm.roles_sql(), nl=False)
        return
    target = _need_dsn(dsn)
    names = jm.install_roles(target, prefix=prefix)
    click.echo(f"roles {', '.join(names.all)} have their privileges ({describe_target(target)})")
