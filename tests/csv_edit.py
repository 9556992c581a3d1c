"""Edits one cell or line of a CSV file in place, to plant bad input in tests."""

import csv
import io


def edit_line(path, line_no, fn):
    with open(path) as f:
        lines = f.read().split("\n")
    lines[line_no - 1] = fn(lines[line_no - 1])
    with open(path, "w") as f:
        f.write("\n".join(lines))


def set_cell(path, line_no, column, value):
    """Sets `column` of the 1-based file line `line_no` (line 1 is the header)."""
    with open(path) as f:
        index = f.readline().strip().split(",").index(column)

    def edit(line):
        fields = next(csv.reader([line]))
        fields[index] = value
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        return out.getvalue()

    edit_line(path, line_no, edit)
