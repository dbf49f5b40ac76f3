"""Scenario parsing: the named splits, XpY, joint, explicit class-name groups, and clear errors."""

import pytest

from nanodet.continual.scenario import ScenarioError, parse_scenario

VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
       "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


@pytest.mark.parametrize("name, tasks", [
    ("15p5", [list(range(15)), [15, 16, 17, 18, 19]]),
    ("10p10", [list(range(10)), list(range(10, 20))]),
    ("19p1", [list(range(19)), [19]]),  # 19 base classes, as the original code (not its README)
    ("15p1", [list(range(15)), [15], [16], [17], [18], [19]]),
    ("joint", [list(range(20))]),
])
def test_named_scenarios_split_the_voc_classes(name, tasks):
    scenario = parse_scenario(name, VOC)
    assert [list(t) for t in scenario.tasks] == tasks
    assert scenario.seen_classes(len(tasks) - 1) == list(range(20))


def test_seen_old_new_future_classes_of_15p1():
    scenario = parse_scenario("15p1", VOC)
    assert scenario.old_classes(2) == list(range(16)) and scenario.new_classes(2) == [16]
    assert scenario.seen_classes(2) == list(range(17)) and scenario.future_classes(2) == [17, 18, 19]
    assert scenario.names(scenario.new_classes(1)) == ["pottedplant"]


def test_coco_scenarios_use_every_class_and_never_make_an_empty_task():
    coco = [f"c{i}" for i in range(80)]
    for name, count in (("40p40", 2), ("40p10", 5), ("70p10", 2)):
        scenario = parse_scenario(name, coco)
        assert len(scenario) == count and all(scenario.tasks)
        assert sorted(c for t in scenario.tasks for c in t) == list(range(80))  # class 40 included


def test_explicit_groups_in_yaml_any_order(tmp_path):
    path = tmp_path / "animals_first.yml"
    path.write_text("- [cat, dog, horse]\n- [car]\n- [bus, train]\n")
    scenario = parse_scenario(str(path), VOC)
    assert [list(t) for t in scenario.tasks] == [[7, 11, 12], [6], [5, 18]]
    assert scenario.name == "animals_first" and scenario.future_classes(2) != []
    inline = parse_scenario("[[cat, dog], [car]]", VOC)
    assert [list(t) for t in inline.tasks] == [[7, 11], [6]]


@pytest.mark.parametrize("spec, message", [
    ("15p1x", "unknown scenario"),
    ("25p5", "does not fit the config's 20 classes"),
    ("20p1", "does not fit"),
    ("15p2", "do not split into tasks of 2"),
    ("15p0", "do not split"),
    ("[[cat, dgo]]", "unknown class 'dgo'"),
    ("[[cat], [cat]]", "more than one task"),
    ("[[cat], []]", "task 1 is empty"),
    ("missing.yml", "not found"),
])
def test_scenarios_that_do_not_fit_are_rejected_clearly(spec, message):
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(spec, VOC)
