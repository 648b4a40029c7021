"""Guest agent: the one program the host starts inside a sandbox (the DSec "chronus" role).

It speaks JSON lines on its stdin/stdout, runs each command in a fresh shell that inherits the session's cwd
and exported variables, caps output, applies the limits to every command, and on timeout kills every
process the command started. Bulk data moves in chunk lines both ways (see `dsv4.sandbox.channel`). The agent
is not dumpable, so the commands it runs (same uid) cannot take its pipes to the host, and it opens files
without blocking on FIFOs or devices.

Stdlib only: it runs under the sandbox's own `python3` as the package `guest` of a zipapp
(`dsv4.sandbox.guest_bundle`), so its modules import each other relatively, never import dsv4, and do nothing
at import. Modules: `loop` (request loop and dispatch), `session` (shell state and the reply writer),
`commands` (exec), `processes` (finding and killing processes), `files` (read, write, list, scan, remove),
`transfer` (tar upload and download), `forward` (port forwarding to the host).
"""
