"""tools/synthetic_report.sh queues the right runs (a stub `python` records each command)."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(tmp_path, logs="logs", check=True, out_name="report", **env):
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    out = tmp_path / out_name
    environ = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "OUT_DIR": str(out), **env}
    done = subprocess.run(["bash", str(ROOT / "tools" / "synthetic_report.sh")], env=environ, check=check,
                          capture_output=True, text=True, timeout=60)
    if not check:
        return done
    return out, {p.stem: p.read_text() for p in (out / logs).glob("*.log")}


def option(command, name):
    words = command.split()
    return words[words.index(name) + 1]


def test_methods_picks_the_runs_of_stage_two_and_bases_still_run(tmp_path):
    out, commands = run_script(tmp_path, SCENARIOS="15p1 10p10", METHODS="naive ld_mbv2")
    assert sorted(commands) == ["10p10_naive", "15p1_ld_mbv2", "15p1_naive", "base_10p10", "base_15p1",
                                "base_15p1_mbv2"]  # joint only when METHODS names it
    mbv2 = commands["15p1_ld_mbv2"].split()
    assert mbv2[0] == "latentDistillation.py" and "cfg/synthetic_mbv2.yml" in mbv2
    assert mbv2[mbv2.index("--base-model") + 1] == str(out / "15p1_mbv2" / "base" / "task_0" / "model.pth")
    assert mbv2[mbv2.index("--out") + 1] == str(out / "15p1_mbv2" / "ld")
    naive = commands["10p10_naive"].split()
    assert naive[:3] == ["naive.py", "--task", "10p10"]
    assert naive[naive.index("--base-model") + 1] == str(out / "10p10" / "base" / "task_0" / "model.pth")


def test_every_method_by_default_and_finished_runs_are_skipped(tmp_path):
    finished = tmp_path / "report" / "19p1" / "sid"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text('{"finished": true}')
    _, commands = run_script(tmp_path, SCENARIOS="19p1")
    # issue 23's methods: the paper's, the new ones alone and their presets (not the ablation's _nobg)
    assert sorted(commands) == ["19p1_box", "19p1_erd", "19p1_latent_replay", "19p1_ld", "19p1_ld_box",
                                "19p1_ld_ocdm_lp", "19p1_ld_pseudo", "19p1_lwf", "19p1_lwf_ocdm", "19p1_naive",
                                "19p1_replay", "19p1_replay_balanced", "19p1_replay_lp", "19p1_replay_ocdm",
                                "base_19p1"]
    assert "--pseudo-labels 0.5" in commands["19p1_ld_pseudo"] and "--latent" in commands["19p1_latent_replay"]
    ocdm, propagation = commands["19p1_replay_ocdm"], commands["19p1_replay_lp"]
    assert ocdm.startswith("replay.py") and "--buffer-policy ocdm" in ocdm
    assert "--label-propagation 0.5" in propagation and "--buffer-policy" not in propagation
    assert commands["19p1_box"].startswith("naive.py") and "--box-replay 1000" in commands["19p1_box"]
    for name in ("19p1_replay", "19p1_replay_balanced", "19p1_latent_replay", "19p1_replay_ocdm", "19p1_lwf_ocdm"):
        assert option(commands[name], "--buffer-size") == "250"  # one buffer size for every image buffer


def test_the_default_scenarios_include_15p5_with_joint_and_the_mobilenet_base(tmp_path):
    _, commands = run_script(tmp_path, METHODS="naive joint ld_mbv2")
    assert sorted(commands) == ["10p10_naive", "15p1_ld_mbv2", "15p1_naive", "15p5_naive", "19p1_naive",
                                "base_10p10", "base_15p1", "base_15p1_mbv2", "base_19p1", "joint"]


@pytest.mark.parametrize("scenarios", ["15p1 15p5", "15p5"])
def test_scenarios_with_the_same_base_classes_share_one_base(tmp_path, scenarios):
    out, commands = run_script(tmp_path, SCENARIOS=scenarios, METHODS="naive")
    assert [name for name in commands if name.startswith("base")] == ["base_15p1"]  # trained once
    assert option(commands["15p5_naive"], "--base-model") == str(out / "15p1" / "base" / "task_0" / "model.pth")
    assert option(commands["base_15p1"], "--task") == "[[" + ",".join(
        "disc ring square frame triangle diamond cross star hexagon octagon pentagon crescent arrow bar lshape".split()
    ) + "]]"


def test_the_paper_protocol_trains_100_epochs_a_task_with_its_500_step_warm_up(tmp_path):
    _, short = run_script(tmp_path, SCENARIOS="19p1", METHODS="ld")
    assert "schedule.total_epochs=40" in short["base_19p1"] and "schedule.total_epochs=25" in short["19p1_ld"]
    assert "schedule.warmup.steps=100" in short["19p1_ld"]
    _, paper = run_script(tmp_path, out_name="paper", SCENARIOS="19p1", METHODS="ld", PROTOCOL="paper")
    assert sorted(paper) == ["19p1_ld", "base_19p1"]
    for command in paper.values():
        assert "schedule.total_epochs=100" in command and "schedule.lr_schedule.T_max=100" in command
        assert "schedule.warmup.steps=500" in command


@pytest.mark.parametrize("env, message", [({"METHODS": "ld lwf_odcm"}, "METHODS: unknown method 'lwf_odcm'"),
                                          ({"PROTOCOL": "long"}, "PROTOCOL must be short or paper, got 'long'")])
def test_a_misspelt_method_or_protocol_stops_before_any_run(tmp_path, env, message):
    done = run_script(tmp_path, check=False, SCENARIOS="19p1", **env)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "report").exists()  # nothing started


def test_the_ablation_and_the_presets_run_by_name(tmp_path):
    _, commands = run_script(tmp_path, SCENARIOS="19p1",
                             METHODS="naive_nobg sid_nobg ld_nobg erd lwf_ocdm ld_ocdm_lp ld_box")
    assert sorted(commands) == ["19p1_erd", "19p1_ld_box", "19p1_ld_nobg", "19p1_ld_ocdm_lp", "19p1_lwf_ocdm",
                                "19p1_naive_nobg", "19p1_sid_nobg", "base_19p1"]
    assert commands["19p1_sid_nobg"].startswith("SID.py") and "--drop-background" in commands["19p1_sid_nobg"]
    assert commands["19p1_erd"].startswith("naive.py") and "--erd" in commands["19p1_erd"]
    assert "--buffer-size 250 --buffer-policy ocdm" in commands["19p1_lwf_ocdm"]
    assert "--buffer-policy ocdm --label-propagation 0.5" in commands["19p1_ld_ocdm_lp"]
    assert "--box-replay 1000" in commands["19p1_ld_box"]


def test_seeds_run_everything_once_per_seed_into_its_own_folder(tmp_path):
    out, first = run_script(tmp_path, logs="seed1/logs", SEEDS="1 2", SCENARIOS="19p1", METHODS="ld")
    second = {p.stem: p.read_text() for p in (out / "seed2" / "logs").glob("*.log")}
    assert sorted(first) == sorted(second) == ["19p1_ld", "base_19p1"]
    for seed, commands in ((1, first), (2, second)):
        for command in commands.values():
            words = command.split()
            assert words[words.index("--seed") + 1] == str(seed)
            assert words[words.index("--out") + 1].startswith(str(out / f"seed{seed}"))


def test_a_dry_run_lists_what_is_left_and_runs_nothing(tmp_path):
    finished = tmp_path / "report" / "19p1" / "ld"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text('{"finished": true}')
    done = run_script(tmp_path, check=False, DRY_RUN="1", SCENARIOS="19p1", METHODS="ld sid")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == ["base_19p1", "19p1_sid"]  # the finished LD run is not listed
    assert "SID.py --task 19p1" in done.stdout
    assert not (tmp_path / "report" / "logs").exists()  # and nothing ran
