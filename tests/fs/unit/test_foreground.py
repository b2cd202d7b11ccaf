"""The uploader's "foreground first" signal (``gobi.fs.foreground``) with explicit request
times: a handful of requests (one edit) never makes the mount busy, a stream does (and
stays one while requests keep coming, however slowly), and a stream that ended frees the
uploader one window after its last request."""

from __future__ import annotations

import pytest

from gobi.fs.foreground import BUSY_REQUESTS, BUSY_WINDOW, Foreground


def test_a_single_edit_does_not_make_the_mount_busy():
    fg = Foreground()
    # open, getxattr, getattr, write, setattr, flush, release…: all at one instant.
    for _ in range(12):
        fg.request(now=100.0)
    assert fg.busy_for(now=100.0) == 0.0


def test_a_stream_of_requests_does_until_it_has_ended():
    fg = Foreground()
    step = BUSY_WINDOW / (4 * BUSY_REQUESTS)          # four times the threshold's rate
    times = [100.0 + i * step for i in range(10 * BUSY_REQUESTS)]
    for t in times[:BUSY_REQUESTS - 1]:
        fg.request(now=t)
    assert fg.busy_for(now=times[BUSY_REQUESTS - 2]) == 0.0   # not a stream yet
    for t in times[BUSY_REQUESTS - 1:]:
        fg.request(now=t)
    end = times[-1]
    oldest = times[-BUSY_REQUESTS]
    assert fg.busy_for(now=end) == pytest.approx(oldest + BUSY_WINDOW - end)
    assert fg.busy_for(now=end) > 0.0
    assert fg.busy_for(now=end + BUSY_WINDOW / 2) > 0.0
    assert fg.busy_for(now=end + BUSY_WINDOW) == 0.0


def test_requests_slower_than_the_threshold_never_make_it_busy():
    fg = Foreground()
    step = 2 * BUSY_WINDOW / BUSY_REQUESTS             # half the threshold's rate
    for i in range(10 * BUSY_REQUESTS):
        t = 100.0 + i * step
        fg.request(now=t)
        assert fg.busy_for(now=t) == 0.0


def test_a_stream_that_slows_down_stays_a_stream_until_it_pauses():
    """Uploads slow a tar x down below the rate; it must not count as over for that."""
    fg = Foreground()
    t = 100.0
    for _ in range(BUSY_REQUESTS):
        t += BUSY_WINDOW / (4 * BUSY_REQUESTS)
        fg.request(now=t)
    assert fg.busy_for(now=t) > 0.0
    for _ in range(3 * BUSY_REQUESTS):                 # now at a tenth of the threshold's rate
        t += 10 * BUSY_WINDOW / BUSY_REQUESTS
        fg.request(now=t)
        assert 0.0 < fg.busy_for(now=t) <= BUSY_WINDOW
    assert fg.busy_for(now=t + BUSY_WINDOW) == 0.0     # a pause of one window: over
    fg.request(now=t + 2 * BUSY_WINDOW)                # and one request later is no stream
    assert fg.busy_for(now=t + 2 * BUSY_WINDOW) == 0.0
