import pytest

from aura.memory.interference import states_change


@pytest.mark.parametrize(
    "text",
    [
        "Actually, Mara moved to Porto last month.",
        "Tomas quit and now works as a baker.",
        "These days Ines only drinks tea.",
        "Bruno no longer plays the cello.",
        "NOW it is Lisbon.",
    ],
)
def test_change_wording_is_found(text):
    assert states_change(text)


@pytest.mark.parametrize(
    "text",
    [
        "Mara lives in Lisbon.",
        "Snow fell in Newcastle; Lena knew it.",  # "now", "new" only inside other words
        "The dayspring came.",  # not the phrase "these days"
        "",
    ],
)
def test_plain_statements_are_not_changes(text):
    assert not states_change(text)
