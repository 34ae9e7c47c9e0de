"""Scripts the tests run as child processes (to kill them with SIGKILL, or to hold a log from
another process); each module's docstring gives its command line."""
