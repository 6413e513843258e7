"""Matched damage (steerlab.study.matched) and the prompting baseline (steerlab.study.prompting)."""

from __future__ import annotations

import itertools
import math

import pytest
import steerlab as sl
from steerlab.study.compare import _heldout_target, _others
from steerlab.study.matched import DAMAGE_GRID, matched_coefficient, matched_damage
from steerlab.study.prompting import instruction_prefix, prompting_style


def test_the_grid_steps_by_root_two_from_a_sixteenth_to_two() -> None:
    assert DAMAGE_GRID[0] == 0.0625 and DAMAGE_GRID[-1] == 2.0 and len(DAMAGE_GRID) == 11
    assert all(b / a == pytest.approx(math.sqrt(2), rel=1e-3) for a, b in itertools.pairwise(DAMAGE_GRID))


def test_the_matched_coefficient_is_placed_between_the_points_around_the_first_crossing() -> None:
    c, how = matched_coefficient([0.125, 0.25, 0.5], [1.05, 1.21, 1.9], 1.25)
    assert how == "interpolated" and 0.25 < c < 0.5
    # linear in log ratio: log(1.25) sits 7.2% of the way from log(1.21) to log(1.9)
    assert c == pytest.approx(0.25 + 0.25 * (math.log(1.25 / 1.21) / math.log(1.9 / 1.21)))
    # exactly on a grid point, and from the unsteered point (0, 1) before the first grid point
    assert matched_coefficient([0.1, 0.2], [1.25, 3.0], 1.25) == (pytest.approx(0.1), "interpolated")
    low, _ = matched_coefficient([0.1, 0.2], [2.0, 3.0], 1.25)
    assert 0 < low < 0.1
    # the first crossing counts even if the curve comes back down later
    assert matched_coefficient([0.1, 0.2, 0.4], [1.1, 1.3, 1.2], 1.25)[0] < 0.2
    assert matched_coefficient([0.1, 0.2], [1.01, 1.1], 1.25) == (0.2, "not reached")
    # a ratio that is not a number is damage past any level: the crossing is the grid point before it
    assert matched_coefficient([0.1, 0.2, 0.4], [1.1, float("nan"), 1.2], 1.25) == (pytest.approx(0.1), "interpolated")
    assert matched_coefficient([0.1, 0.2], [float("nan"), 1.2], 1.25) == (0.0, "interpolated")


@pytest.mark.parametrize(("grid", "ratios", "level", "message"), [
    ([0.1, 0.2], [1.1], 1.25, "2 coefficients but 1 ratios"),
    ([0.2, 0.1], [1.1, 1.2], 1.25, "positive and increasing"),
    ([0.0, 0.1], [1.1, 1.2], 1.25, "positive and increasing"),
    ([0.1, 0.2], [1.1, 1.2], 1.0, "level"),
])
def test_bad_curves_are_refused(grid: list[float], ratios: list[float], level: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        matched_coefficient(grid, ratios, level)


def test_matched_damage_separates_a_planted_direction_from_a_random_one(real_model: sl.Model) -> None:
    """A measure that can say no: the direction from the evaluation stories themselves moves the
    propensity at matched damage; a random direction at the same damage does not."""
    layer = 15
    targets, others = _heldout_target("fantasy", 6), _others("fantasy", 6)
    planted = sl.build("isolated", real_model, [layer], target=targets, reference=others).at(layer)
    random = sl.build("random", real_model, [layer], target="fantasy").at(layer)
    general = sl.data.load_dataset("general", "heldout").sample(4, seed=0).texts
    rows = matched_damage(real_model, {"planted": planted, "random": random}, layer=layer, position="all",
                          general=general, target_texts=targets, other_texts=others,
                          unit=sl.unit_norm(real_model, layer), grid=[0.0625, 0.125, 0.25, 0.5, 1.0])
    got = {r["condition"]: r for r in rows}
    for r in rows:  # both at the level, on the same six story pairs
        assert r["status"] == "interpolated" and len(r["shifts"]) == 6 and r["ci"][0] <= r["mean"] <= r["ci"][1]
        assert 0 < r["coefficient"] < 1.0 and r["damage"] == sorted(r["damage"])
    assert got["planted"]["ci"][0] > 0.1  # steers
    assert got["random"]["ci"][0] < 0 < got["random"]["ci"][1]  # does not
    assert got["planted"]["ci"][0] > got["random"]["ci"][1]


def test_prompting_asks_through_the_chat_template_on_an_instruct_model_and_a_prefix_otherwise(
        real_model: sl.Model, tiny_llama: sl.Model) -> None:
    assert prompting_style(real_model) == "chat"  # SmolLM2-135M-Instruct
    chat = instruction_prefix(real_model, "science_fiction")
    assert "Write a science fiction story." in chat and chat.endswith("assistant\n")
    assert instruction_prefix(real_model, "horror", "prefix") == "The following is a horror story.\n\n"
    assert "style of Shakespeare" in instruction_prefix(real_model, "shakespeare", "prefix")
    assert prompting_style(tiny_llama) == "prefix"  # not named as instruction-tuned
    with pytest.raises(ValueError, match="prompting style 'polite'"):
        prompting_style(real_model, "polite")
