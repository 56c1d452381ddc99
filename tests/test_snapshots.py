"""Snapshot tests of the main screens on the demo world with a fixed clock.

The scenes are the ones ``make screenshots`` captures (tui/screenshots.py). When a
screen changes on purpose, update with ``pytest --snapshot-update`` and look at
every changed SVG before committing it.
"""

from __future__ import annotations

from pathlib import Path

from tui.screenshots import SCENES, SIZE, dashboard, demo_world, empty_world, events_screen, production


def test_main_screen(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE, run_before=SCENES["main"])


def test_deploy_detail_of_a_rollback(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE,
                        run_before=SCENES["deploy-detail"])


def test_help_screen(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE, run_before=SCENES["help"])


def test_empty_state_no_deploys_yet(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(empty_world(tmp_path / "w")), terminal_size=SIZE, run_before=SCENES["main"])


# -- the health panel (production's checks), each state from fixed samples and a fixed clock --


def test_health_healthy(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE, run_before=production)


def test_health_degraded(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", "degraded")), terminal_size=SIZE,
                        run_before=production)


def test_health_down(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", "down")), terminal_size=SIZE, run_before=production)


def test_health_drifting(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", "drifting")), terminal_size=SIZE,
                        run_before=production)


def test_health_down_on_a_narrow_terminal(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", "down")), terminal_size=(90, 30),
                        run_before=production)


# -- the line: stopped, a rollback counting down (fixed clock), and the events screen --------


def test_line_stopped_banner(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", line="rolling-back")), terminal_size=SIZE,
                        run_before=production)


def test_line_stopped_banner_on_a_narrow_terminal(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", line="rolling-back")), terminal_size=(90, 30),
                        run_before=production)


def test_events_screen(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w", line="rolling-back")), terminal_size=SIZE,
                        run_before=events_screen)


# -- the migration backlog (b) and the rollback it holds (!) ---------------------------------


def test_migrations_screen(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE, run_before=SCENES["migrations"])


def test_rollback_held_by_a_migration(snap_compare, tmp_path: Path) -> None:
    assert snap_compare(dashboard(demo_world(tmp_path / "w")), terminal_size=SIZE, run_before=SCENES["rollback-held"])
