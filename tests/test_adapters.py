"""The dataset adapters: data=synthetic, coursera, movielens, epm. Small hand-made files for the rules
and error cases; the real datasets (shared_data marker) against the counts of their PROVENANCE.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deeprec.data.adapters import coursera, epm, movielens, synthetic
from deeprec.data.adapters.shared_data import dataset_path
from deeprec.data.synthetic import SyntheticConfig, course_catalogue
from deeprec.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
BEHAVIOUR_HEADER = "userID\tVidID\tfracSpent\tfracComp\tfracPlayed\tfracPaused\tnumPauses\tavgPBR\tstdPBR\tnumRWs\tnumFFs\ts\n"


@pytest.mark.parametrize("module", [synthetic, coursera, movielens, epm])
def test_yaml_keys_are_the_config_fields(module):
    name = module.__name__.rsplit(".", 1)[1]
    keys = yaml.safe_load((REPO / "conf" / "data" / f"{name}.yaml").read_text())
    keys.pop("defaults", None)
    fields = {f.name for f in dataclasses.fields(module.CONFIG)}
    assert set(keys) <= fields and keys["name"] == name
    # composed groups (ratings) come from the defaults list, every other field is in the file
    assert fields - set(keys) <= {"ratings"}


@pytest.mark.parametrize("name", ["synthetic", "coursera", "movielens", "epm"])
def test_composed_train_config_validates(name):
    from hydra import compose, initialize_config_module

    from deeprec.cli.common import data_config

    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}"])
    validated = data_config(cfg.data)
    assert validated.name == name
    if name == "synthetic":  # the YAML spells out the generator's defaults
        assert dataclasses.asdict(validated.generator) == dataclasses.asdict(SyntheticConfig())
    if name == "epm":  # the composed ratings group keeps SPEC defaults except the lowered minimum
        assert validated.ratings.min_courses == 2 and validated.ratings.session_gap_minutes == 30.0


def test_missing_dataset_names_the_places_and_data_path():
    with pytest.raises(DataError, match=r"no-such-dataset.*looked in.*data\.path="):
        dataset_path(None, "no-such-dataset", "demo")
    with pytest.raises(DataError, match="does not exist"):
        dataset_path("/nonexistent/folder", "x", "demo")


def test_environment_variable_finds_a_dataset(tmp_path, monkeypatch):
    (tmp_path / "my-set").mkdir()
    monkeypatch.setenv("DEEPREC_SHARED_DATA", str(tmp_path))
    assert dataset_path(None, "my-set", "demo") == (tmp_path / "my-set").resolve()


# -- synthetic ------------------------------------------------------------------------------------

def test_synthetic_adapter_rates_the_log_and_attaches_course_features():
    gen = SyntheticConfig(n_courses=30, seed=2)
    cfg = synthetic.SyntheticDataConfig(n_events=30_000, generator=gen)
    data = synthetic.load(cfg)
    catalogue = course_catalogue(gen).set_index("course_id")
    assert set(data.item_ids) <= set(catalogue.index)
    features = data.item_features
    topics = [c for c in features.columns if c.startswith("topic=")]
    assert len(topics) == gen.n_topics and (features[topics].sum(axis=1) == 1).all()
    expected_topic = "topic=" + catalogue.loc[data.item_ids, "topic"].to_numpy()
    assert (features[topics].idxmax(axis=1).to_numpy() == expected_topic).all()
    assert np.allclose(features["difficulty"], catalogue.loc[data.item_ids, "difficulty"], atol=1e-6)
    assert (features["n_lessons"].to_numpy() == catalogue.loc[data.item_ids, "n_lessons"].to_numpy()).all()
    splits = data.frame["split"].value_counts()
    assert {"train", "valid", "test"} <= set(splits.index)
    assert data.frame["rating"].between(0, 5).all()
    # with the catalogue, pct = lessons viewed / the course's catalogued lessons (SPEC 1.5)
    ratings = data.extras["ratings_summary"]
    assert ratings["rows_in"] == 30_000 and ratings["users"] == data.n_users


def test_synthetic_catalogue_changes_lessons_in():
    gen = SyntheticConfig(n_courses=60, seed=4, popularity_exponent=1.5)
    with_cat = synthetic.load(synthetic.SyntheticDataConfig(n_events=20_000, generator=gen))
    without = synthetic.load(synthetic.SyntheticDataConfig(n_events=20_000, generator=gen, use_catalogue=False))
    # rare courses have lessons nobody reached; counting only seen lessons can only raise the share viewed
    assert with_cat.frame["rating"].mean() <= without.frame["rating"].mean()


# -- coursera --------------------------------------------------------------------------------------

def behaviour_row(user, video, spent=1.0, comp=0.9, paused=0.0, rws=0, ffs=0, s=1) -> str:
    return f"{user}\t{video}\t{spent}\t{comp}\t{comp}\t{paused}\t0\t1.0\t0.0\t{rws}\t{ffs}\t{s}\n"


def write_behaviour(tmp_path: Path, rows: list[str], header: str = BEHAVIOUR_HEADER) -> Path:
    path = tmp_path / "behavior-performance.tsv"
    path.write_text(header + "".join(rows))
    return path


def test_coursera_cleaning_rules_and_reasons(tmp_path):
    rows = [behaviour_row("a", v, comp=0.1 * v, s=v % 2) for v in range(10)]  # a: 10 clean videos
    rows += [
        behaviour_row("b", 0, spent=0.0),  # empty_record
        behaviour_row("b", 1, comp=1.5),  # fracComp_above_1
        behaviour_row("b", 2, rws=61),  # numRWs_above_60
        behaviour_row("b", 3, ffs=61),  # numFFs_above_60
        behaviour_row("b", 4, paused=101),  # fracPaused_above_100
        behaviour_row("b", 5, spent=101),  # fracSpent_above_100
        behaviour_row("b", 6, comp="oops"),  # bad_value
        behaviour_row("", 7),  # missing_user
        behaviour_row("a", 0),  # duplicate (a, 0)
        behaviour_row("b", 8, comp=1.0, rws=60),  # exactly at the limits: kept
    ]
    path = write_behaviour(tmp_path, rows)
    data = coursera.load(coursera.CourseraDataConfig(path=str(path)))
    rejects = data.extras["rejects"]
    assert rejects["reason"].tolist() == [
        "empty_record", "fracComp_above_1", "numRWs_above_60", "numFFs_above_60", "fracPaused_above_100",
        "fracSpent_above_100", "bad_value", "missing_user", "duplicate",
    ]
    assert data.extras["rows_in"] == len(rows) == len(data.frame) + len(rejects)
    behaviour = data.extras["video_behaviour"]
    assert list(behaviour.columns[:3]) == ["userID", "VidID", "fracSpent"] and len(behaviour) == 11
    # rating = fracComp, matched by (student, video)
    frame = data.frame.assign(u=data.user_ids[data.frame["user"]], v=data.item_ids[data.frame["item"]])
    assert frame.set_index(["u", "v"])["rating"].loc[("a", "3")] == pytest.approx(0.3)
    # hold-out: 20% of a's 10 videos are test; b has 1 video left, which stays train
    assert (frame[frame["u"] == "a"]["split"] == "test").sum() == 2
    assert frame[frame["u"] == "b"]["split"].tolist() == ["train"]


def test_coursera_item_features_use_train_rows_only(tmp_path):
    rows = [behaviour_row(u, v, comp=0.5 + 0.05 * v, s=(ord(u) + v) % 2) for u in "abcdefghij" for v in range(5)]
    data = coursera.load(coursera.CourseraDataConfig(path=str(write_behaviour(tmp_path, rows)), valid_share=0.0))
    frame = data.frame
    behaviour = data.extras["video_behaviour"]
    train = frame["split"].to_numpy() == "train"
    for item, video in enumerate(data.item_ids):  # a naive per-video reference (5 videos)
        rows_v = (frame["item"].to_numpy() == item) & train
        watched = behaviour[rows_v]
        assert data.item_features.loc[item, "fracStudy"] == pytest.approx(rows_v.sum() / data.n_users)
        assert data.item_features.loc[item, "avgfracComp"] == pytest.approx(watched["fracComp"].mean())
        assert data.item_features.loc[item, "fracCorrect"] == pytest.approx(watched["s"].mean())


def test_coursera_rating_choices(tmp_path):
    path = write_behaviour(tmp_path, [behaviour_row("a", 0, comp=0.4, s=0), behaviour_row("a", 1, comp=0.6, s=1)])
    s = coursera.load(coursera.CourseraDataConfig(path=str(path), rating="s"))
    assert sorted(s.frame["rating"].tolist()) == [0.0, 1.0]
    binary = coursera.load(coursera.CourseraDataConfig(path=str(path), rating="binary"))
    assert binary.frame["rating"].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="data.rating='stars'.*fracComp"):
        coursera.load(coursera.CourseraDataConfig(path=str(path), rating="stars"))
    with pytest.raises(ConfigError, match="error_limits.*'nope'"):
        coursera.load(coursera.CourseraDataConfig(path=str(path), error_limits={"nope": 1.0}))


def test_coursera_bad_files(tmp_path):
    missing = write_behaviour(tmp_path, [], header="userID\tVidID\tfracSpent\ts\n")
    with pytest.raises(DataError, match=r"behavior-performance.tsv.*\['fracComp'\] missing"):
        coursera.load(coursera.CourseraDataConfig(path=str(missing)))
    header_only = write_behaviour(tmp_path, [])
    with pytest.raises(DataError, match="no rows"):
        coursera.load(coursera.CourseraDataConfig(path=str(header_only)))
    header_only.write_text("")
    with pytest.raises(DataError, match="empty"):
        coursera.load(coursera.CourseraDataConfig(path=str(header_only)))
    with pytest.raises(DataError, match="does not exist"):
        coursera.load(coursera.CourseraDataConfig(path=str(tmp_path / "absent.tsv")))


@pytest.mark.shared_data
def test_coursera_real_counts(shared_data):
    raw = pd.read_csv(shared_data / "coursera-video-behavior" / "behavior-performance.tsv", sep="\t")
    assert (len(raw), raw["userID"].nunique(), raw["VidID"].nunique()) == (29_304, 3_976, 92)  # PROVENANCE.md
    data = coursera.load(coursera.CourseraDataConfig())
    rejects = data.extras["rejects"]
    assert data.extras["rows_in"] == 29_304 == len(data.frame) + len(rejects)
    reasons = rejects["reason"].value_counts()
    assert reasons["empty_record"] == 549  # SPEC 2.1: the paper's 549 empty records
    # an independent count of every other rule, in SPEC order (first match wins)
    left = raw[raw["fracSpent"] != 0]
    for column, limit in (("fracComp", 1), ("numRWs", 60), ("numFFs", 60), ("fracPaused", 100), ("fracSpent", 100)):
        over = left[column] > limit
        assert reasons.get(f"{column}_above_{limit}", 0) == over.sum()
        left = left[~over]
    assert len(left) == len(data.frame) == len(data.extras["video_behaviour"])
    assert data.n_items == left["VidID"].nunique() and data.n_users == left["userID"].nunique()
    test_share = (data.frame["split"] == "test").mean()
    assert 0.15 < test_share < 0.3


# -- movielens --------------------------------------------------------------------------------------

def write_movielens(folder: Path, ratings: str, movies: str | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "ratings.csv").write_text(ratings)
    if movies is not None:
        (folder / "movies.csv").write_text(movies)
    return folder


def test_movielens_small_folder(tmp_path):
    ratings = "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{(u + m) % 5 + 1}.0,{1_000_000 + 100 * m + u}\n" for u in (1, 2) for m in range(1, 11)
    ) + "3,1,7.0,5\n3,2,4.0,notatime\n"
    movies = 'movieId,title,genres\n1,A (1990),Comedy|Drama\n2,"B, the (1991)",(no genres listed)\n3,C (1992),Drama\n'
    folder = write_movielens(tmp_path / "ml", ratings, movies)
    data = movielens.load(movielens.MovieLensDataConfig(path=str(folder)))
    assert data.extras["rejects"]["reason"].tolist() == ["bad_rating", "bad_timestamp"]
    assert data.extras["rows_in"] == 22 == len(data.frame) + 2
    features = data.item_features.set_index(pd.Index(data.item_ids))
    assert sorted(features.columns) == ["genre=Comedy", "genre=Drama"]
    assert features.loc["1"].tolist() == [1.0, 1.0] and features.loc["2"].sum() == 0 and features.loc["10"].sum() == 0
    # temporal split: every user's test ratings are later than their train ratings
    frame = data.frame
    for user in range(data.n_users):
        mine = frame[frame["user"] == user]
        assert mine.loc[mine["split"] == "train", "timestamp"].max() < mine.loc[mine["split"] == "test", "timestamp"].min()
    liked = movielens.load(movielens.MovieLensDataConfig(path=str(folder), min_rating=4.0))
    assert (liked.frame["rating"] >= 4).all()
    assert (liked.extras["rejects"]["reason"] == "below_min_rating").sum() == sum(
        (u + m) % 5 + 1 < 4 for u in (1, 2) for m in range(1, 11)
    )


def test_movielens_bad_files(tmp_path):
    folder = write_movielens(tmp_path / "a", "userId,rating,timestamp\n1,4.0,5\n")
    with pytest.raises(DataError, match=r"ratings.csv.*\['movieId'\] missing"):
        movielens.load(movielens.MovieLensDataConfig(path=str(folder)))
    folder = write_movielens(tmp_path / "b", "")
    with pytest.raises(DataError, match="empty"):
        movielens.load(movielens.MovieLensDataConfig(path=str(folder)))
    folder = write_movielens(tmp_path / "c", "userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="no rows"):
        movielens.load(movielens.MovieLensDataConfig(path=str(folder)))
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        movielens.load(movielens.MovieLensDataConfig(path=str(tmp_path / "d")))


@pytest.mark.shared_data
def test_movielens_real_counts(shared_data):
    data = movielens.load(movielens.MovieLensDataConfig())
    assert (len(data.frame), data.n_users, data.n_items) == (100_836, 610, 9_724)  # PROVENANCE.md
    assert len(data.extras["rejects"]) == 0
    toy_story = data.item_features.loc[int(np.flatnonzero(data.item_ids == "1")[0])]
    assert set(toy_story[toy_story > 0].index) == {f"genre={g}" for g in "Adventure Animation Children Comedy Fantasy".split()}
    liked = movielens.load(movielens.MovieLensDataConfig(min_rating=4.0))
    assert len(liked.frame) == 26_818 + 8_551 + 13_211  # ratings 4, 4.5 and 5 in PROVENANCE.md


# -- epm ----------------------------------------------------------------------------------------------

def epm_line(session, student, exercise, activity, start, end="01.10.2014 00:00:00") -> str:
    return f"{session}, {student}, {exercise}, {activity}, {start}, {end}, 0, 0, 0, 1, 0, 10, 0\n"


def write_epm(root: Path, files: dict[tuple[int, int], str]) -> Path:
    for (session, student), text in files.items():
        folder = root / "Processes" / f"Session {session}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(student)).write_text(text)
    return root


def test_epm_events_mapping_and_local_time(tmp_path):
    root = write_epm(tmp_path / "epm", {
        (1, 7): epm_line(1, 7, "Es", "Other", "2.10.2014 11:25:33") + epm_line(1, 7, "Es_1_1", "Study_Es_1_1", "2.10.2014 11:25:40"),
        (6, 7): epm_line(6, 7, "Es_5_2", "Deeds_Es_5_2", "11.12.2014 09:00:00"),
    })
    events = epm.epm_events(root)
    assert events["user_id"].tolist() == ["7", "7", "7"]
    assert events["course_id"].tolist() == ["session_1", "session_1", "session_5"]  # the exercise's session
    assert events["lesson_id"].isna().tolist() == [True, False, False]
    assert events["event"].tolist() == ["Other", "Study_Es_1_1", "Deeds_Es_5_2"]
    # Rome is UTC+2 in summer time (until 26 Oct 2014) and UTC+1 after
    expected = [pd.Timestamp("2014-10-02 09:25:33Z"), pd.Timestamp("2014-10-02 09:25:40Z"), pd.Timestamp("2014-12-11 08:00:00Z")]
    assert events["timestamp"].tolist() == [int(t.timestamp()) for t in expected]


def test_epm_ratings_from_hand_made_sessions(tmp_path):
    files = {}
    for student in (1, 2):
        for session in (1, 2, 3):
            day = f"{session + 1}.10.2014"
            files[(session, student)] = (
                epm_line(session, student, f"Es_{session}_1", f"Study_Es_{session}_1", f"{day} 10:00:00")
                + epm_line(session, student, f"Es_{session}_1", "Blank", f"{day} 10:01:00")  # ends lesson 1 after 60 s
                + (epm_line(session, student, f"Es_{session}_2", f"Deeds_Es_{session}_2", f"{day} 10:02:00")
                   + epm_line(session, student, "Es", "Aulaweb", f"{day} 10:02:30") if student == 1 else "")
                + epm_line(session, student, f"Es_{session}_1", f"TextEditor_Es_{session}_1", "31.02.2014 10:03:00")  # bad date
            )
    root = write_epm(tmp_path / "epm", files)
    data = epm.load(epm.EpmDataConfig(path=str(root), valid_share=0.0))
    summary = data.extras["ratings_summary"]
    assert summary["rows_in"] == 24 and summary["rows_accepted"] == 18 and summary["rows_rejected"]["bad_timestamp"] == 6
    assert summary["lesson_views"] == 6 + 3  # Study and Deeds rows; Blank/Aulaweb/Es are not lesson views
    # student 1 viewed both lessons of each session (pct 1), student 2 one of two (pct 0.5): per-user
    # threshold = their own mean, so both rate every course 5 (SPEC 1.7-1.8)
    assert sorted(data.item_ids) == ["session_1", "session_2", "session_3"]
    assert (data.frame["rating"] == 5.0).all()
    assert data.frame.groupby("user")["split"].apply(lambda s: sorted(s)).tolist() == [["test", "train", "train"]] * 2
    assert epm.EpmDataConfig().ratings.min_courses == 2


def test_epm_bad_files(tmp_path):
    root = write_epm(tmp_path / "a", {(1, 1): "1, 1, Es, Other, 2.10.2014 11:25:33\n"})
    with pytest.raises(DataError, match=r"Session 1/1: has 5 columns; an EPM process file has 13"):
        epm.epm_events(root)
    root = write_epm(tmp_path / "b", {(1, 1): epm_line(1, 1, "Es", "Other", "2.10.2014 11:25:33"), (1, 2): ""})
    with pytest.raises(DataError, match=r"Session 1/2: the file is empty"):
        epm.epm_events(root)
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match="not an EPM folder|no 'Session"):
        epm.epm_events(tmp_path / "c")
    good = write_epm(tmp_path / "d", {(1, 1): epm_line(1, 1, "Es_1_1", "Study_Es_1_1", "2.10.2014 11:25:33")})
    with pytest.raises(ConfigError, match="view_activities.*matches no activity"):
        epm.load(epm.EpmDataConfig(path=str(good), view_activities="^Nothing"))
    with pytest.raises(ConfigError, match="timezone"):
        epm.load(epm.EpmDataConfig(path=str(good), timezone="Mars/Olympus"))


@pytest.mark.shared_data
def test_epm_real_counts(shared_data):
    events = epm.epm_events(shared_data / "epm-deeds-clickstream")
    assert (len(events), events["user_id"].nunique()) == (156_219, 77)  # PROVENANCE.md
    # 30 distinct exercise values = 29 exercises Es_<s>_<n> + the bare Es (PROVENANCE.md says "30 exercises
    # (+ bare Es)"; the files hold 29: 4 + 6 + 4 + 5 + 4 + 6 per session)
    assert events["exercise"].nunique() == 30 and events["lesson_id"].nunique() == 29 and (events["exercise"] == "Es").sum() == events["lesson_id"].isna().sum()
    per_session = events.groupby("session")["user_id"].nunique().tolist()
    assert per_session == [54, 55, 57, 66, 61, 55]
    assert events["timestamp"].notna().all()
    data = epm.load(epm.EpmDataConfig())
    summary = data.extras["ratings_summary"]
    assert summary["rows_in"] == 156_219
    assert summary["rows_accepted"] + sum(summary["rows_rejected"].values()) == 156_219
    sessions_per_student = events.groupby("user_id")["session"].nunique()
    assert data.n_users == (sessions_per_student >= 2).sum() and data.n_items == 6
