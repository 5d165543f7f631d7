import type { ExitStatus } from "../runtime.ts";

/**
 * The program every exec runs as inside the task, ahead of the command:
 * `perl -e WRAPPER -- MERGE ARGV...`. `runc exec` reports a command killed by
 * signal n as exit code 128+n, the same as `exit 128+n`; the wrapper is the
 * command's parent inside the task, so it sees the real wait status and
 * writes it (`code N` or `signal N`) to fd 3, a file of the router's that the
 * runtime passes in (`--preserve-fds 1`) and the command never inherits.
 *
 * It also:
 * - makes itself a process-group leader first (runc's exec already made it a
 *   session leader, then this fails harmlessly; crun's exec without a
 *   terminal does not), so the pid in the runtime's pid file is the group
 *   the router signals;
 * - ignores every catchable signal itself (the command gets the defaults
 *   back), so a signal sent to the exec's process group reaches the command
 *   and the wrapper stays to report how the command ended;
 * - points the command's stderr at its stdout when MERGE is 1 (one pipe, write
 *   order kept by the kernel);
 * - reports a program that cannot start the way the host runtime does:
 *   `taskrouter: NAME: command not found` (127) or `Permission denied` (126);
 * - closes its own stdio after the fork, so output pipes end with the
 *   command's tree, not with the wrapper.
 *
 * perl is Essential in Debian (perl-base), so it is in every Debian-based
 * image and in the host image; built-ins only, no module loads (~1 ms).
 */
export const WRAPPER_SCRIPT = String.raw`
$0 = "taskrouter-exec";
setpgrp(0, 0);
my $merge = shift @ARGV;
open(my $st, ">&=", 3) or die "taskrouter: no status channel: $!\n";
my @sigs = grep { !/^(?:KILL|STOP|CHLD|CLD|ZERO|NUM3[23])$/ } keys %SIG;
for (@sigs) { local $SIG{__WARN__} = sub {}; eval { $SIG{$_} = "IGNORE" } }
my $pid = fork;
if (!defined $pid) { print STDERR "taskrouter: fork: $!\n"; syswrite($st, "code 126\n"); exit 126 }
if ($pid == 0) {
  for (@sigs) { local $SIG{__WARN__} = sub {}; eval { $SIG{$_} = "DEFAULT" } }
  close $st;
  open(STDERR, ">&", \*STDOUT) if $merge eq "1";
  { no warnings; exec { $ARGV[0] } @ARGV; }
  my $c = ($!{ENOENT} || $!{ENOTDIR}) ? 127 : 126;
  print STDERR "taskrouter: $ARGV[0]: ", ($c == 127 ? "command not found" : "Permission denied"), "\n";
  exit $c;
}
close STDIN; close STDOUT; close STDERR;
my $r;
do { $r = waitpid($pid, 0) } while ($r == -1 && $!{EINTR});
exit 125 if $r != $pid;
my $s = $?;
if ($s & 127) { syswrite($st, "signal " . ($s & 127) . "\n"); exit 128 + ($s & 127) }
syswrite($st, "code " . ($s >> 8) . "\n");
exit($s >> 8);
`;

/** Where perl is expected inside the task. */
export const WRAPPER_INTERPRETER = "/usr/bin/perl";

/** The argv that runs `argv` under the wrapper. */
export function wrapArgv(argv: string[], merge: boolean): string[] {
  return [WRAPPER_INTERPRETER, "-e", WRAPPER_SCRIPT, "--", merge ? "1" : "0", ...argv];
}

/** Parses the wrapper's report (`code N` / `signal N`), or undefined when there is none. */
export function parseWrapperStatus(text: string): ExitStatus | undefined {
  const m = /^(code|signal) (\d+)\n/.exec(text);
  if (!m) return undefined;
  const n = Number(m[2]);
  return m[1] === "signal" ? { signal: n } : { code: n };
}

/**
 * The exit status of an exec whose wrapper left no report: it was killed
 * (its whole group was: SIGKILL from a timeout or task teardown) or the
 * runtime failed before starting it. `runc exec` exits with 128+n when the
 * wrapper died of signal n.
 */
export function statusWithoutReport(runtimeExit: ExitStatus): ExitStatus {
  if (runtimeExit.signal !== undefined) return runtimeExit;
  const c = runtimeExit.code;
  if (c > 128 && c < 128 + 65) return { signal: c - 128 };
  return { code: c };
}
