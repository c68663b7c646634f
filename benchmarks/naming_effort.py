"""How many actions a person needs to name every face of the faces-dev people with 3+ photos:
on the names page alone (the baseline), and with the suggestions page.

    .venv/bin/python benchmarks/naming_effort.py [--data DIR] [--backend offline]

A simulated person answers from the ground truth (who each labelled face is), through the same
functions the pages call (``LabelingBook``, ``suggest``, ``update_labels``, ``add_rejections``),
on the faces of faces-dev clustered by ``cluster_faces`` as shipped, with empty labels. Done
means: every face of a target person carries their name (labelled or inherited), and no face
of anyone else carries a name (the run fails loudly otherwise). Faces nobody labelled (group
photos, bystanders) are not scored; the person leaves them be, and says "no" when one is
suggested (a real person might say "yes": it costs one action either way).

Actions, each counted as one: typing a name (Enter included), clicking a face to select it,
picking from a menu, clicking a button, pressing a key.

- ``names page``: the best a person can do without suggestions: name each person's clusters
  (one typed name each; a cluster mostly of others is left to them), then select that
  person's stray faces all over the page and move them at once (one click per face, the
  person's name from the menu, Move: faces + 2; to a name not given yet: faces + 3), and
  select faces of people who are not to be named from named clusters and Ignore them
  (faces + 1).
- ``suggestions, y/n``: name each person's biggest cluster on the names page, then go through
  "Is this <name>?" a page of suggestions at a time, one key per suggestion (y or n); a
  person whose page holds no right suggestion is done. What is left: as on the names page.
- ``suggestions, yes to all``: the same, but on each page the cheaper of "no" to the wrong
  suggestions then "yes to all shown" (wrong + 1), and "yes" to the right ones alone (the
  wrong ones then stay unanswered).

A suggestion is right when the faces a "yes" names (every unnamed face of its cluster: names
inherit through clusters) are that person's, or nobody labelled them. The bar and the ranking
are the product's (``identity_pipeline.labeling.suggestions``); nothing here is tuned on
faces-dev.

Variants: faces-dev as it is, then plus one degraded copy of every labelled photo (labelled
like it) at the issue's strengths: long side 320 / 224 / 160 px, blur 0.4 / 0.7 / 1.0 px, JPEG
quality 45 / 35 / 25 (faces in real group photos), and ``harsh`` (shrunk to a ~40 px face).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import pandas as pd  # noqa: E402

from benchmarks.clustering import DEGRADATIONS, add_degraded_faces, load_faces  # noqa: E402
from benchmarks.shared_data import FACES_DEV  # noqa: E402
from identity_pipeline.clustering import cluster_faces, face_clusters_table  # noqa: E402
from identity_pipeline.clustering.cluster import arrow_table  # noqa: E402
from identity_pipeline.labeling.identities import IGNORED  # noqa: E402
from identity_pipeline.labeling.labels import update_labels  # noqa: E402
from identity_pipeline.labeling.rejections import (  # noqa: E402
    add_rejections,
    read_rejections,
    rejections_path,
)
from identity_pipeline.labeling.state import LabelingBook, clusters_table_path  # noqa: E402
from identity_pipeline.labeling.suggestions import (  # noqa: E402
    SuggestionSettings,
    VectorCache,
    suggest,
)
from identity_pipeline.storage import DataLayout, atomic_write_table  # noqa: E402

DEFAULT_DATA = FACES_DEV
MIN_PHOTOS = 3


# --- the faces --------------------------------------------------------------------------------


def target_people(data: Path) -> set[str]:
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    photos = labels[labels["person"] != ""].groupby("person")["path"].nunique()
    return set(photos[photos >= MIN_PHOTOS].index)


# --- the simulated person ---------------------------------------------------------------------


@dataclass
class Session:
    """One naming session over a fresh copy of the labels: the book and the actions taken."""

    book: LabelingBook
    truth: dict[str, str | None]  # face_id -> person (None: nobody labelled it)
    target: set[str]
    actions: Counter = field(default_factory=Counter)

    def status(self) -> pd.DataFrame:
        return self.book.state().resolved.faces

    def name_card(self, key: str, name: str) -> None:
        self.book.name_group(key, name)
        self.actions["typed names"] += 1

    def wrong_faces(self) -> tuple[dict[str, list[str]], list[str]]:
        """Faces still to fix: target people's faces without their name (per person), and
        faces of anyone else that carry a name (to ignore)."""
        faces = self.status()
        missing: dict[str, list[str]] = {}
        stray: list[str] = []
        for face, identity, status in zip(
            faces["face_id"].astype(str), faces["identity"], faces["status"], strict=True
        ):
            who = self.truth.get(face)
            named = identity if isinstance(identity, str) else None
            if who in self.target and named != who:
                missing.setdefault(who, []).append(face)
            elif who is not None and who not in self.target and named is not None:
                stray.append(face)
            elif who is None and status == IGNORED:
                pass
        return missing, stray

    def fix_by_hand(self) -> None:
        """The names page's select-and-move: per person, select all their faces, pick the
        name, Move; then select the strays and Ignore. Again while that changed what other
        faces inherit (a cluster holding two names splits by nearest name)."""
        for _ in range(5):
            missing, stray = self.wrong_faces()
            if not missing and not stray:
                return
            self._fix(missing, stray)

    def _fix(self, missing: dict[str, list[str]], stray: list[str]) -> None:
        known = set(self.book.state().labels.people)
        for person, faces in sorted(missing.items()):
            self.actions["clicks on faces"] += len(faces)
            self.actions["menu + button"] += 2
            if person not in known:
                self.actions["typed names"] += 1
            self.book.move_faces(faces, target_name=person)
        if stray:
            self.actions["clicks on faces"] += len(stray)
            self.actions["menu + button"] += 1
            self.book.ignore_faces(stray)

    def check_done(self) -> int:
        """Raises unless every target face has its name and nobody else has one; returns the
        faces nobody labelled that ended up with a name (through their cluster)."""
        missing, stray = self.wrong_faces()
        if missing or stray:
            raise AssertionError(
                f"not done: {sum(map(len, missing.values()))} missing, {len(stray)} stray"
            )
        faces = self.status()
        unknown = faces["face_id"].astype(str).map(lambda f: self.truth.get(f) is None)
        return int((unknown & faces["identity"].notna()).sum())

    @property
    def total(self) -> int:
        return sum(self.actions.values())


def majority(people: list[str]) -> str:
    counts = Counter(people)
    return min(counts, key=lambda p: (-counts[p], p))


def name_clusters(session: Session, biggest_only: bool) -> None:
    """Type a name on the clusters that are mostly one target person (biggest first); with
    ``biggest_only`` just each person's biggest one (suggestions bring the rest)."""
    state = session.book.state()
    cards = sorted(
        (g for g in state.groups.values() if not g.ignored and g.size >= 2),
        key=lambda g: (-g.size, g.cluster_id),
    )
    named: set[str] = set()
    for card in cards:
        known = [session.truth.get(f) for f in card.face_ids]
        mine = [p for p in known if p in session.target]
        if not mine:
            continue
        person = majority(mine)
        others = sum(1 for p in known if p is not None and p != person)
        if mine.count(person) <= others or (biggest_only and person in named):
            continue  # cheaper to move this person's faces out than to fix the cluster
        session.name_card(card.key, person)
        named.add(person)


def answer_suggestions(session: Session, yes_to_all: bool, settings: SuggestionSettings) -> int:
    """Go through "Is this <name>?" until no target person's page holds a right suggestion;
    returns the pages looked at."""
    cache = VectorCache()
    path = rejections_path(session.book.labels_path)
    pages = 0
    while True:
        state = session.book.state()
        found = suggest(state, read_rejections(path), settings, cache)
        unnamed = set(
            state.resolved.faces.loc[state.resolved.faces["status"] == "unnamed", "face_id"].astype(
                str
            )
        )
        progress = False
        for person, items in found.for_people.items():
            if person not in session.target:
                continue
            right, wrong = [], []
            for item in items[: settings.page_size]:
                named_by_yes = [f for f in state.groups[item.group].face_ids if f in unnamed]
                who = {session.truth.get(f) for f in named_by_yes} - {None}
                (right if who == {person} else wrong).append(item)
            if not right:
                continue
            pages += 1
            progress = True
            if not yes_to_all:  # y or n on every suggestion of the page
                session.actions["keys (y)"] += len(right)
                session.actions["keys (n)"] += len(wrong)
            elif len(wrong) + 1 <= len(right):  # n on the wrong ones, then yes to the rest
                session.actions["keys (n)"] += len(wrong)
                session.actions["yes to all"] += 1
            else:  # y on the right ones; the wrong ones stay unanswered
                session.actions["keys (y)"] += len(right)
                wrong = []
            update_labels(session.book.labels_path, {f: person for i in right for f in i.face_ids})
            if wrong:
                add_rejections(path, not_person=[(f, person) for i in wrong for f in i.face_ids])
            break  # the page is fetched again after a page of answers
        if not progress:
            return pages


# --- the benchmark ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    policy: str
    actions: Counter
    total: int
    unknown_named: int
    pages: int
    seconds: float


def run_policy(
    name: str,
    table: pd.DataFrame,
    truth: dict[str, str | None],
    target: set[str],
    steps: Callable[[Session], int],
) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        layout = DataLayout(Path(tmp))
        atomic_write_table(clusters_table_path(layout), arrow_table(table))
        session = Session(
            LabelingBook(clusters_table_path(layout), layout.labels_path), truth, target
        )
        started = time.perf_counter()
        pages = steps(session)
        session.fix_by_hand()
        seconds = time.perf_counter() - started
        return Result(name, session.actions, session.total, session.check_done(), pages, seconds)


def policies(settings: SuggestionSettings) -> dict[str, Callable[[Session], int]]:
    def names_page(session: Session) -> int:
        name_clusters(session, biggest_only=False)
        return 0

    def with_suggestions(yes_to_all: bool) -> Callable[[Session], int]:
        def steps(session: Session) -> int:
            name_clusters(session, biggest_only=True)
            return answer_suggestions(session, yes_to_all, settings)

        return steps

    return {
        "names page (baseline)": names_page,
        "suggestions, y/n": with_suggestions(False),
        "suggestions, yes to all": with_suggestions(True),
    }


def evaluate(
    variant: str, faces: pd.DataFrame, target: set[str], settings: SuggestionSettings
) -> list[str]:
    started = time.perf_counter()
    table = face_clusters_table(faces, cluster_faces(faces))
    clustered = time.perf_counter() - started
    truth = dict(zip(faces["face_id"].astype(str), faces["truth"], strict=True))
    truth = {f: (p if isinstance(p, str) else None) for f, p in truth.items()}
    wanted = sum(1 for p in truth.values() if p in target)
    sizes = table["cluster_id"].value_counts()
    alone = sum(
        1
        for f, c in zip(table["face_id"], table["cluster_id"], strict=True)
        if truth[str(f)] in target and sizes[c] == 1
    )
    results = [
        run_policy(name, table, truth, target, steps) for name, steps in policies(settings).items()
    ]
    base = results[0].total
    lines = [
        f"\n{variant}: {len(faces)} faces, {wanted} of {len(target)} people to name "
        f"({alone} of them alone in their cluster), clustered in {clustered:.1f}s; "
        f"at least {len(target)} actions (one name each)"
    ]
    header = f"{'policy':<26} {'actions':>7} {'vs base':>7} {'names':>5} {'face clicks':>11} {'menus+btns':>10} {'y':>4} {'n':>4} {'yes-all':>7} {'pages':>5} {'unknown named':>13}"
    lines += [header, "-" * len(header)]
    for r in results:
        a = r.actions
        lines.append(
            f"{r.policy:<26} {r.total:7d} {r.total / base:7.2f} {a['typed names']:5d} "
            f"{a['clicks on faces']:11d} {a['menu + button']:10d} {a['keys (y)']:4d} "
            f"{a['keys (n)']:4d} {a['yes to all']:7d} {r.pages:5d} {r.unknown_named:13d}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backend", default="offline")
    parser.add_argument("--variants", default="all", help="comma-separated: faces-dev,light,...")
    args = parser.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(
            f"faces-dev not found at {args.data} (set --data or $IDENTITY_PIPELINE_SHARED)",
            file=sys.stderr,
        )
        return 2
    settings = SuggestionSettings()
    faces, skipped = load_faces(args.data, args.backend)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    target = target_people(args.data)
    wanted = args.variants.split(",") if args.variants != "all" else None
    print(
        f"faces-dev: {len(faces)} faces; {len(target)} people with {MIN_PHOTOS}+ photos to name; "
        f"suggestion pages of {settings.page_size}"
    )
    if wanted is None or "faces-dev" in wanted:
        print("\n".join(evaluate("faces-dev", faces, target, settings)))
    for degradation in DEGRADATIONS:
        if wanted is not None and degradation.name not in wanted:
            continue
        worse = add_degraded_faces(faces, args.data, args.backend, degradation)
        print("\n".join(evaluate(f"+ {degradation.name} copies", worse, target, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
