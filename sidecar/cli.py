"""The `drift-sidecar` command; the only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sidecar import __version__
from sidecar.errors import SidecarError


def _cmd_run(args: argparse.Namespace) -> int:
    from sidecar.config import embedded_defaults, load_config  # noqa: PLC0415
    from sidecar.daemon import Daemon  # noqa: PLC0415
    from sidecar.logs import configure  # noqa: PLC0415

    config = load_config(args.config) if args.config else embedded_defaults()
    configure(args.log_level or config.log.level, config.log.format)

    async def main() -> int:
        return await Daemon(config).run()

    return asyncio.run(main())


def _cmd_check_config(args: argparse.Namespace) -> int:
    from sidecar.config import load_config  # noqa: PLC0415
    from sidecar.loading import load_baselines  # noqa: PLC0415

    config = load_config(args.file)
    if args.baselines:
        load_baselines(config, captured=False)  # the state folder is the daemon's business
    print(f"{args.file}: OK ({len(config.models)} models)")
    return 0


def _cmd_baseline_build(args: argparse.Namespace) -> int:
    from sidecar.baseline_build import build_baseline_file  # noqa: PLC0415
    from sidecar.config import load_config  # noqa: PLC0415
    from sidecar.errors import ConfigError  # noqa: PLC0415

    config = load_config(args.config)
    spec = config.model(args.model)
    if spec is None:
        names = ", ".join(m.name for m in config.models) or "none"
        raise ConfigError(
            [f"models: no model named {args.model!r} (configured: {names})"], args.config
        )
    d = config.drift_for(spec)
    baseline, summary = build_baseline_file(
        args.source,
        args.out,
        spec.name,
        numeric_names=[f.name for f in spec.features if f.type == "numeric"],
        categorical_names=[f.name for f in spec.features if f.type == "categorical"],
        prediction_kind=spec.prediction.type if spec.prediction else None,
        sample=args.sample,
        seed=args.seed,
        psi_bins=d.psi_bins,
        max_categories=d.max_categories,
        embedding_dim=spec.embedding.dim if spec.embedding else None,
    )
    print(f"wrote {args.out}: {baseline.rows} rows, sha256 {baseline.sha256}")
    for row in summary:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sidecar.demo import run_demo  # noqa: PLC0415

    return run_demo(
        duration=args.duration,
        port=args.port,
        drift_after=args.drift_after,
        rate=args.rate,
        quiet=args.quiet,
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from sidecar.config import HttpSettings, load_config  # noqa: PLC0415
    from sidecar.status import default_url, status_text  # noqa: PLC0415

    url = args.url
    if url is None:
        http = load_config(args.config).http if args.config else HttpSettings()
        url = default_url(http.host, http.port)
    print(status_text(url, args.feature, args.model, args.timeout))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="drift-sidecar",
        description="Drift monitoring beside an ML model server, on Prometheus /metrics.",
    )
    p.add_argument("--version", action="version", version=f"drift-sidecar {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", help="YAML config file (default: embedded defaults)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_cmd_run)

    chk = sub.add_parser("check-config", help="validate a config file; names each bad key")
    chk.add_argument("file")
    chk.add_argument(
        "--baselines", action="store_true", help="also load every baseline file the config names"
    )
    chk.set_defaults(func=_cmd_check_config)

    base = sub.add_parser("baseline", help="baseline tools")
    bsub = base.add_subparsers(dest="baseline_command", required=True)
    build = bsub.add_parser("build", help="build a baseline parquet from training data")
    build.add_argument(
        "--from", dest="source", required=True, help="training data, .parquet or .csv"
    )
    build.add_argument("--config", required=True, help="sidecar.yaml naming the model")
    build.add_argument("--model", required=True)
    build.add_argument("--out", required=True, help="baseline parquet to write")
    build.add_argument(
        "--sample", type=int, default=50_000, help="rows kept by reservoir sampling (default 50000)"
    )
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=_cmd_baseline_build)

    demo = sub.add_parser("demo", help="daemon + stand-in model server whose traffic drifts")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.add_argument("--port", type=int, default=9108, help="HTTP port for /metrics")
    demo.add_argument(
        "--drift-after",
        type=float,
        default=20.0,
        help="seconds of clean traffic before features start to drift",
    )
    demo.add_argument("--rate", type=float, default=500.0, help="predictions per second")
    demo.add_argument("--quiet", action="store_true", help="no live table; for scripts")
    demo.set_defaults(func=_cmd_demo)

    st = sub.add_parser(
        "status", help="a running daemon's models, features, statistics, verdicts and bins"
    )
    st.add_argument(
        "--url", help="the daemon's HTTP base URL (default: from --config, else the default bind)"
    )
    st.add_argument("--config", "-c", help="read http.host and http.port from this config")
    st.add_argument("--feature", help="draw this feature's reference and window shares per bin")
    st.add_argument("--model", help="the model of --feature, when several have it")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    st.set_defaults(func=_cmd_status)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SidecarError as exc:
        print(f"drift-sidecar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
