import pytest

from sat_audio.errors import SatAudioError
from sat_audio.labels import all_labels, find, search


def test_527_labels_in_output_order() -> None:
    labels = all_labels()
    assert len(labels) == 527
    assert [lab.index for lab in labels] == list(range(527))
    assert len({lab.mid for lab in labels}) == 527
    assert labels[0].name == "Speech"
    assert labels[526].name == "Field recording"


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("Dog", 74),
        ("dog", 74),
        ("  DOORBELL ", 355),
        ("/m/07r4wb8", 359),
        ("/M/07R4WB8", 359),
        ("Baby cry, infant cry", 23),
    ],
)
def test_find_by_name_or_mid_ignoring_case(query: str, index: int) -> None:
    assert find(query).index == index


def test_unknown_label_suggests_close_names() -> None:
    with pytest.raises(
        SatAudioError,
        match=r"unknown AudioSet label 'glass breaking'; did you mean 'Glass', 'Breaking'",
    ):
        find("glass breaking")


def test_unknown_label_without_close_match_says_so() -> None:
    with pytest.raises(SatAudioError, match=r"^unknown AudioSet label 'zzzzqqq'$"):
        find("zzzzqqq")


def test_search_matches_parts_of_names() -> None:
    names = {lab.name for lab in search("alarm")}
    assert {"Smoke detector, smoke alarm", "Fire alarm", "Car alarm", "Alarm"} <= names
