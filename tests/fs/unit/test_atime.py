"""The atime rule (``gobi.fs.atime``): relatime, strictatime, noatime, and the options."""

from gobi.fs import atime

DAY = atime.RELATIME_MAX_AGE_NS


def test_relatime_moves_an_atime_not_newer_than_the_mtime_or_a_day_old():
    due = atime.due
    assert due("relatime", 0, 100, 100, 200)                  # never read: reads as the mtime
    assert due("relatime", 100, 100, 50, 200)                 # not newer than the mtime
    assert due("relatime", 150, 100, 150, 200)                # not newer than the ctime
    assert not due("relatime", 150, 100, 120, 200)           # read since the last change
    assert due("relatime", 150, 100, 120, 150 + DAY)          # … a day ago
    assert due("strictatime", 150, 100, 120, 200)
    assert not due("noatime", 0, 100, 100, 200)


def test_the_atime_option_is_taken_from_the_mount_options():
    assert atime.split_options(["allow_other"]) == ("relatime", ["allow_other"])
    assert atime.split_options(["strictatime", "ro"]) == ("strictatime", ["ro"])
    # noatime also tells the kernel; the last option given wins.
    assert atime.split_options(["noatime", "relatime"]) == ("relatime", [])
    assert atime.split_options(["relatime", "noatime"]) == ("noatime", ["noatime"])
