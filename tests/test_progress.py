"""Progress output in logs: plain lines, no escape codes."""

from ssad.progress import fit_verbose, progress_bar


def test_plain_lines_every_hundred_images_when_not_a_terminal(capsys):
    bar = progress_bar(250)  # pytest captures stdout: not a terminal
    for _ in range(25):
        bar.add(10)
    assert capsys.readouterr().out.splitlines() == [
        "100/250 images",
        "200/250 images",
        "250/250 images",
    ]
    assert fit_verbose(1) == 2 and fit_verbose(0) == 0
