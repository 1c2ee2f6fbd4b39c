"""Where the pack's files are read and written, safely.

* ``files``: the one gate for opening a file (``check_regular`` / ``open_regular`` / ``open_fd``: regular
  files only, never blocking on a FIFO, optionally without following a final link or creating for append),
  atomic writes and names that stay in their folder;
* ``lines``: the one exclusive lock (``exclusive``, ``flocked``), the one locked JSON-lines append
  (``append_lines``) and the one bounded line reader (``bounded_lines``);
* ``prompts``: the one prompt-file reader (``read_prompts`` / ``split_prompts``);
* ``text``: text from files made safe for a terminal (``printable``) and strict one-line JSON (``json_text``).

Import from the submodules; this package re-exports nothing, so every name has one home.
"""
