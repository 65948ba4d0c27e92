"""The `embedrl` command: fast help, every group present, generation and validation wired."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedrl.cli import GROUP_HELP, build_parser, main

EMBEDRL = Path(sys.executable).parent / "embedrl"


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [str(EMBEDRL)] if EMBEDRL.exists() else [sys.executable, "-m", "embedrl.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120)


def test_help_is_fast_and_lists_every_group():
    started = time.perf_counter()
    done = _run("--help")
    elapsed = time.perf_counter() - started
    assert done.returncode == 0
    assert elapsed < 1.5, f"embedrl --help took {elapsed:.2f} s"
    for group in GROUP_HELP:
        assert group in done.stdout


def test_help_imports_no_heavy_library():
    code = ("import sys; from embedrl.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'kfp', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("group", list(GROUP_HELP))
def test_every_group_has_help(group, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([group, "--help"])
    assert exit_info.value.code == 0
    assert GROUP_HELP[group] in capsys.readouterr().out


def test_every_command_has_help(capsys):
    parser = build_parser()
    groups = parser._subparsers._group_actions[0].choices
    for name, group in groups.items():
        for command in group._subparsers._group_actions[0].choices:
            with pytest.raises(SystemExit) as exit_info:
                main([name, command, "--help"])
            assert exit_info.value.code == 0
            assert "usage:" in capsys.readouterr().out


def test_generate_then_validate_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "mm"
    assert main(["data", "generate", "--out", str(out), "--seed", "3", "--size", "small", "--quiet"]) == 0
    assert "detail-blind Hit@1" in capsys.readouterr().out
    assert main(["data", "validate", str(out)]) == 0


def test_generate_check_dvc_fails_on_another_version(tmp_path, capsys):
    out = tmp_path / "mm"
    dvc_file = tmp_path / "data.dvc"
    dvc_file.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    code = main(["data", "generate", "--out", str(out), "--size", "small", "--quiet", "--check-dvc", str(dvc_file)])
    assert code == 1
    assert "0123456789abcdef0123456789abcdef.dir" in capsys.readouterr().err
