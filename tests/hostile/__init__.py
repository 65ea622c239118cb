"""Hostile-input tests (issue 16): every case ends with exit 0, or exit 2/3 and a message naming the problem."""
