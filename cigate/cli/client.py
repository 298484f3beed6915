"""Client verbs of the ``cigate`` command: ``run``, ``fetch``, ``ls`` and ``demo``.

Thin on purpose: options become a ``ClientConfig`` (one precedence rule, in
``cigate.client._config``), the library does the work, and this module only draws progress and
tables. Errors are ``CigateError``s, which the root group prints as one line plus a hint with a
per-class status.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markdown import Markdown

from cigate.client._config import ClientConfig, resolve_config
from cigate.client._results import Harvest, RunResult
from cigate.exceptions import BadInputError
from cigate.harvest.refs import FileRef

__all__ = ["register"]

F = TypeVar("F", bound=Callable[..., Any])


def _connection_options(fn: F) -> F:
    """Endpoint and credential options shared by every client verb."""
    options = [
        click.option(
            "--endpoint",
            envvar="CIGATE_ENDPOINT",
            show_envvar=True,
            help="Azure resource, Foundry or v1 URL, or an OpenAI base URL "
            "[also AOAI_API_BASE, AZURE_OPENAI_ENDPOINT, OPENAI_BASE_URL].",
        ),
        click.option(
            "--api-key",
            envvar="CIGATE_API_KEY",
            show_envvar=True,
            help="API key [also AZURE_OPENAI_API_KEY, OPENAI_API_KEY]; "
            "without one, Microsoft Entra ID is used.",
        ),
        click.option(
            "--auth",
            type=click.Choice(["auto", "key", "entra"]),
            envvar="CIGATE_AUTH",
            show_envvar=True,
            help="Credential: a key when one is set (auto), the key, or Entra ID "
            "(DefaultAzureCredential).",
        ),
        click.option(
            "--scope",
            envvar="CIGATE_TOKEN_SCOPE",
            show_envvar=True,
            help="Entra ID token scope [default: https://ai.azure.com/.default for a Foundry "
            "project endpoint, else https://cognitiveservices.azure.com/.default].",
        ),
        click.option(
            "--api-version",
            envvar="CIGATE_API_VERSION",
            show_envvar=True,
            help="'preview' to send api-version=preview; dated versions are ignored on v1 "
            "[also AOAI_API_VERSION, OPENAI_API_VERSION].",
        ),
        click.option(
            "--concurrency",
            type=int,
            envvar="CIGATE_CONCURRENCY",
            show_envvar=True,
            help="Downloads at once [default: 16].",
        ),
        click.option(
            "--retries",
            type=int,
            envvar="CIGATE_RETRIES",
            show_envvar=True,
            help="Attempts per download step [default: 4].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_OUT = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CIGATE_OUT",
    show_envvar=True,
    help="Directory files are saved to [default: ./downloads].",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _container_id(value: str) -> str:
    """A container id as the service writes it, or the bad-input error (exit 3)."""
    if not value.startswith(("cntr_", "cntr-")):
        raise BadInputError(
            f"{value!r} is not a container id",
            hint="Container ids start with cntr_ (the container_id of a code_interpreter_call).",
        )
    return value


def _read_prompt(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt from the argument, from stdin (``-``), or from ``--prompt-file``."""
    if (prompt is None) == (prompt_file is None):
        raise BadInputError(
            "give the prompt as an argument, '-' for stdin, or --prompt-file FILE (one of them)"
        )
    try:
        if prompt_file is not None:
            text = prompt_file.read_text(encoding="utf-8")
        elif prompt == "-":
            text = sys.stdin.read()
        else:
            text = prompt or ""
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the prompt: {exc}") from exc
    if not text.strip():
        raise BadInputError("the prompt is empty")
    return text


def _config(model: str | None = None, out: Path | None = None, **options: Any) -> ClientConfig:
    config = resolve_config(model=model, out=str(out) if out else None, **options)
    console = Console(stderr=True)
    for text in config.warnings:
        console.print(f"[yellow]warning:[/] {text}", highlight=False)
    return config.with_options(warnings=())


def _print_result(result: Harvest, as_json: bool, *, answer: bool = True) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from cigate.client._render import TABLE_MIN_WIDTH, files_lines

        console = Console()
        plain = not console.is_terminal or console.width < TABLE_MIN_WIDTH
        if answer and isinstance(result, RunResult) and result.local_text:
            if plain:
                click.echo(result.local_text)
            else:
                console.print(Markdown(result.local_text))
        if not result.results:
            click.echo("No files were produced.")
        elif plain:  # piped or narrow: whole names and paths, one file per line
            for line in files_lines(result.results):
                click.echo(line)
        else:
            console.print(result)
    result.raise_for_errors()


@click.command()
@click.argument("prompt", required=False)
@click.option(
    "--prompt-file",
    type=click.Path(path_type=Path),
    help="Read the prompt from this file (or pass '-' as PROMPT to read stdin).",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Input file to upload into the container (repeatable).",
)
@click.option("--instructions", help="System instructions for the model.")
@click.option(
    "--model",
    envvar="CIGATE_MODEL",
    show_envvar=True,
    help="Deployment (Azure) or model name [also AOAI_DEPLOYMENT].",
)
@click.option("--container", help="Run in this existing container (cntr_…).")
@click.option(
    "--agent",
    help="Run this Foundry agent (its latest version; its model, instructions and files).",
)
@click.option(
    "--previous-response",
    "previous_response_id",
    help="Continue the conversation of this response (resp_…).",
)
@click.option(
    "--reasoning-effort",
    type=click.Choice(["minimal", "low", "medium", "high"]),
    help="Reasoning effort for reasoning models (request option reasoning.effort).",
)
@_OUT
@click.option("--no-stream", is_flag=True, help="Wait for the whole response instead of streaming.")
@click.option(
    "--max-output-tokens",
    type=click.IntRange(min=16),
    help="Cap the model's output (Responses API); past it the response ends incomplete.",
)
@click.option(
    "--api",
    type=click.Choice(["responses", "assistants"]),
    default="responses",
    envvar="CIGATE_API",
    show_envvar=True,
    show_default=True,
    help="Responses API (containers, cfile_ ids) or Assistants API (durable assistant- files).",
)
@_JSON
@_connection_options
def run(  # noqa: PLR0917 - one parameter per click option
    prompt: str | None,
    prompt_file: Path | None,
    files: tuple[Path, ...],
    instructions: str | None,
    model: str | None,
    container: str | None,
    agent: str | None,
    previous_response_id: str | None,
    reasoning_effort: str | None,
    out: Path | None,
    no_stream: bool,
    max_output_tokens: int | None,
    api: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Run PROMPT with the code interpreter and download every file it makes.

    Files are fetched the moment they are cited, then the container is listed so that files
    written but never cited are kept too. PROMPT '-' reads the prompt from stdin.

    \b
    Examples:
      cigate run "Plot y=x^2 and save it as a PNG" --model gpt-4.1 --out ./downloads
      cigate run - --file sales.csv < prompt.md
      cigate run "Now as a bar chart" --previous-response resp_abc
      cigate run "Chart the upload" --agent MyAgent \\
          --endpoint https://RES.services.ai.azure.com/api/projects/PROJECT
    """
    from cigate.cli.console import ConsoleObserver
    from cigate.client._responses import run as run_prompt

    text = _read_prompt(prompt, prompt_file)
    config = _config(model=model, out=out, **options)
    if container is not None:
        _container_id(container)
    if api == "assistants":
        for flag, value in (
            ("--max-output-tokens", max_output_tokens),
            ("--previous-response", previous_response_id),
            ("--reasoning-effort", reasoning_effort),
            ("--agent", agent),
        ):
            if value is not None:
                raise BadInputError(f"{flag} applies to the Responses API, not --api assistants")
        _run_assistants(text, files, instructions, container, not no_stream, config, as_json)
        return
    if agent is not None and model is not None:  # arun sees only the config's model
        raise BadInputError(
            "a Foundry agent brings its own model, instructions, tools and files; drop --model"
        )
    with ConsoleObserver() as observer:
        result = run_prompt(
            text,
            files=files,
            instructions=instructions,
            container=container,
            stream=not no_stream,
            config=config,
            observer=observer,
            max_output_tokens=max_output_tokens,
            previous_response_id=previous_response_id,
            options={"reasoning": {"effort": reasoning_effort}} if reasoning_effort else None,
            agent=agent,
        )
    _print_result(result, as_json)


def _run_assistants(  # noqa: PLR0917 - the run command's options, passed on
    prompt: str,
    files: tuple[Path, ...],
    instructions: str | None,
    container: str | None,
    stream: bool,
    config: ClientConfig,
    as_json: bool,
) -> None:
    """``cigate run --api assistants``: seed 004's flow (``cigate.client._assistants``)."""
    from cigate.cli.console import ConsoleObserver
    from cigate.client._assistants import run_assistants

    if container is not None:
        raise BadInputError("--container applies to the Responses API, not --api assistants")
    with ConsoleObserver() as observer:
        result = run_assistants(
            prompt,
            files=files,
            instructions=instructions,
            stream=stream,
            config=config,
            observer=observer,
        )
    _print_result(result, as_json)


@click.command()
@click.argument("container_id", required=False)
@click.argument("file_ids", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every file of the container.")
@click.option("--response", "response_id", help="Fetch what this stored response (resp_…) cites.")
@_OUT
@_JSON
@_connection_options
def fetch(  # noqa: PLR0917 - one parameter per click option
    container_id: str | None,
    file_ids: tuple[str, ...],
    fetch_all: bool,
    response_id: str | None,
    out: Path | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Download files of a container, or the files a stored response cites.

    \b
    Examples:
      cigate fetch cntr_abc cfile_123 cfile_456
      cigate fetch cntr_abc --all --out ./downloads
      cigate fetch --response resp_abc
    """
    from cigate.cli.console import ConsoleObserver
    from cigate.client._responses import download, fetch_response, list_files

    if response_id and (container_id or file_ids or fetch_all):
        raise BadInputError("use either --response RESP_ID or CONTAINER_ID [FILE_ID ...]")
    config = _config(out=out, **options)
    if response_id:
        with ConsoleObserver() as observer:
            harvest = fetch_response(response_id, config=config, observer=observer)
        _print_result(harvest, as_json)
        return
    if not container_id:
        raise BadInputError("give CONTAINER_ID (cntr_…) or --response RESP_ID")
    _container_id(container_id)
    if not file_ids and not fetch_all:
        raise BadInputError("give FILE_IDs to fetch, or --all for every file of the container")
    refs = _container_refs(container_id, file_ids, fetch_all, config, list_files)
    with ConsoleObserver() as observer:
        harvest = download(refs, config=config, observer=observer)
    _print_result(harvest, as_json)


def _container_refs(
    container_id: str,
    file_ids: tuple[str, ...],
    fetch_all: bool,
    config: ClientConfig,
    list_files: Callable[..., list[dict[str, Any]]],
) -> list[FileRef]:
    """FileRefs named after the container's paths (ids alone when listing fails)."""
    from cigate.exceptions import CigateError

    try:
        records = list_files(container_id, config=config)
    except CigateError:
        if fetch_all:
            raise
        records = []
    by_id = {str(r.get("id")): r for r in records}
    wanted = list(by_id) if fetch_all else list(file_ids)
    refs = []
    for fid in wanted:
        record = by_id.get(fid, {})
        path = str(record.get("path") or "")
        size = record.get("bytes")
        refs.append(
            FileRef(
                file_id=fid,
                filename=Path(path).name if path else fid,
                container_id=container_id,
                source="listing",
                path=path or None,
                bytes=size if isinstance(size, int) else None,
            )
        )
    return refs


@click.command(name="ls")
@click.argument("container_id")
@_JSON
@_connection_options
def ls(container_id: str, as_json: bool, **options: Any) -> None:
    """List the files of a container.

    Example: cigate ls cntr_682e0e7318108198aa783fd921ff305e08e78805b9fdbb04
    """
    from cigate.client._render import container_table
    from cigate.client._responses import list_files

    records = list_files(_container_id(container_id), config=_config(**options))
    if as_json:
        click.echo(json.dumps({"container_id": container_id, "data": records}, indent=2))
    else:
        Console().print(container_table(container_id, records))


@click.command()
@_OUT
@_JSON
def demo(out: Path | None, as_json: bool) -> None:
    """Run seed 000's example offline against an in-process emulator.

    Uploads a small CSV shipped with cigate, asks the code interpreter for a bar chart of operating
    profit by sector and a CSV summary, and downloads both (default: ./downloads).

    Example: cigate demo --out ./downloads
    """
    from cigate.cli.console import ConsoleObserver
    from cigate.cli.demo import DEMO_PROMPT, demo_data, emulated_endpoint
    from cigate.client._responses import run as run_prompt

    console = Console(stderr=True)
    console.print("Starting the local emulator (no Azure account needed)…")
    with (
        emulated_endpoint(out=str(out) if out else None) as config,
        ConsoleObserver(console) as observer,
    ):
        result = run_prompt(DEMO_PROMPT, files=[demo_data()], config=config, observer=observer)
    _print_result(result, as_json)


def register(main: click.Group) -> None:
    """Add the client verbs to the root ``cigate`` group."""
    for command in (run, fetch, ls, demo):
        main.add_command(command)
