"""jaxattr's XLA:CPU flag: added once, never over a user's own choice, and switchable off."""

import pytest

from jaxattr import _xla_flags


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("JAXATTR_XLA_FLAGS", raising=False)
    monkeypatch.setattr(_xla_flags, "version", lambda name: "0.10.2")
    return monkeypatch


def test_flag_is_appended_to_existing_flags(env):
    env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert _xla_flags.apply()
    import os
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4 " + _xla_flags._FLAG


def test_users_choice_and_opt_out_are_respected(env):
    import os
    env.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert not _xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
    env.setenv("XLA_FLAGS", "")
    env.setenv("JAXATTR_XLA_FLAGS", "0")
    assert not _xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == ""


def test_unknown_jaxlib_versions_get_no_flag(env):
    import os
    env.setenv("XLA_FLAGS", "")
    env.setattr(_xla_flags, "version", lambda name: "0.12.0")
    assert not _xla_flags.apply()
    assert os.environ["XLA_FLAGS"] == ""
