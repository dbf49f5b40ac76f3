"""A method's settings are declared once (nanodet/continual/methods/settings.py) and everything
else derives from them: the flags and their help, the checks, describe() and the run's name."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from fixtures_continual import ROOT
from nanodet.continual.methods import METHODS, build_method
from nanodet.continual.methods.settings import add_flags, setting, values_for
from nanodet.continual.methods.sid import SID, SIDSettings


def test_describe_and_run_name_follow_the_declarations():
    assert build_method("ld").describe() == {"method": "ld", "alpha": 1.0, "beta": 1.0, "freeze_backbone_from": None}
    assert build_method("ld").run_name() == "ld"
    method = build_method("ld", pseudo_labels=0.5, drop_background=True, alpha=2.0)
    assert method.describe() == {"method": "ld", "pseudo_labels": 0.5, "pseudo_label_iou": 0.5,
                                 "drop_background": True, "alpha": 2.0, "beta": 1.0, "freeze_backbone_from": None}
    assert method.run_name() == "ld_pseudo_labels0.5_drop_background_alpha2.0"  # the IoU does not name a run
    assert build_method("naive").describe() == {"method": "naive"}
    assert build_method("latent_replay", latent_dtype="int8").describe() == {
        "method": "latent_replay", "buffer_size": 250, "buffer_policy": "random", "latent_dtype": "int8",
        "freeze_backbone_from": None}


@pytest.mark.parametrize("name, settings, message", [
    ("sid", {"pseudo_labels": 1.5}, r"--pseudo-labels is a score threshold in \(0, 1\), got 1.5"),
    ("replay", {"buffer_size": 0}, r"--buffer-size must be positive, got 0"),
    ("replay", {"buffer_policy": "newest"},
     r"--buffer-policy must be one of \('random', 'balanced', 'ocdm'\), got 'newest'"),
    ("ld", {"freeze_backbone_from": -1}, r"--freeze-backbone-from must be >= 0, got -1"),
    ("latent_replay", {"latent_dtype": "int4"}, r"--latent-dtype must be one of \('fp16', 'int8'\), got 'int4'"),
])
def test_a_bad_value_is_refused_by_its_flag(name, settings, message):
    with pytest.raises(ValueError, match=message):
        build_method(name, **settings)


def test_a_setting_of_another_method_is_refused():
    with pytest.raises(TypeError, match="latent_dtype"):
        build_method("ld", latent_dtype="int8")


def help_of(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "-h"], capture_output=True, text=True, check=True)
    return " ".join(out.stdout.split())


def test_every_setting_with_a_flag_is_on_its_entry_points_command_line():
    for script, names in (("latentDistillation.py", ["ld"]), ("replay.py", ["replay", "latent_replay"])):
        help_text = help_of(script)
        for name in names:
            for field in dataclasses.fields(METHODS[name].Settings):
                flag = "--" + field.name.replace("_", "-")
                assert (flag + " " in help_text) == field.metadata["flag"], (script, flag)
        if script == "latentDistillation.py":
            assert "--alpha ALPHA weight of logit distillation (default 1)" in help_text
            assert "--buffer-size IMAGES keep this many earlier-task images in a replay buffer" in help_text


def test_adding_a_setting_is_one_declaration():
    @dataclasses.dataclass(frozen=True)
    class TemperedSettings(SIDSettings):
        temperature: float = setting(2.0, float, "softmax temperature of the logit distillation",
                                     check=lambda v: None if v > 0 else "must be positive")

    class Tempered(SID):
        name = "tempered"
        Settings = TemperedSettings

    parser = argparse.ArgumentParser()
    offered = add_flags(parser, [TemperedSettings])
    assert ("--temperature TEMPERATURE softmax temperature of the logit distillation (default 2)"
            in " ".join(parser.format_help().split()))
    args = parser.parse_args(["--temperature", "4", "--alpha", "0.5"])
    method = Tempered(**values_for(TemperedSettings, args, offered, "tempered"))
    assert method.settings.temperature == 4.0 and method.settings.alpha == 0.5
    assert method.describe()["temperature"] == 4.0
    assert method.run_name() == "tempered_alpha0.5_temperature4.0"
    with pytest.raises(ValueError, match="--temperature must be positive, got 0"):
        Tempered(temperature=0)


def test_a_flag_of_the_method_not_chosen_is_an_error():
    parser = argparse.ArgumentParser()
    offered = add_flags(parser, [METHODS["replay"].Settings, METHODS["latent_replay"].Settings])
    args = parser.parse_args(["--latent-dtype", "int8"])
    with pytest.raises(ValueError, match="--latent-dtype does not apply to replay"):
        values_for(METHODS["replay"].Settings, args, offered, "replay")
    assert values_for(METHODS["latent_replay"].Settings, args, offered, "latent_replay")["latent_dtype"] == "int8"
    defaults = values_for(METHODS["replay"].Settings, parser.parse_args([]), offered, "replay")
    assert defaults == {"pseudo_labels": None, "drop_background": False, "erd": False, "buffer_size": 250,
                        "buffer_policy": "random", "label_propagation": None, "box_replay": None,
                        "box_replay_side": 48, "box_replay_per_image": 2}
