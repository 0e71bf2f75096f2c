// Tests src/commands/run.ts option parsing: options end at `--` or the first non-option word; bad values exit 2.
import t from "tap";
import { parseVmArgs } from "../../src/commands/run.js";
import { UsageError } from "../../src/errors.js";

t.test("command after --, and without --", async (t) => {
  t.same(parseVmArgs(["--accel", "tcg", "--", "ls", "-l"], "/w"), {
    options: { accel: "tcg", shares: [], offline: false, verbose: false },
    command: ["ls", "-l"],
  });
  t.same(parseVmArgs(["-v", "uname", "-a"], "/w").command, ["uname", "-a"]);
  t.same(parseVmArgs(["--memory=512", "--cpus", "1", "--", "--weird"], "/w").command, ["--weird"]);
});

t.test("shares: relative host paths resolve against cwd; :ro makes them read-only", async (t) => {
  const { options } = parseVmArgs(["--share", "out:/vmdib/work", "--share=/abs:/x:ro", "true"], "/home/u");
  t.same(options.shares, [
    { hostPath: "/home/u/out", guestPath: "/vmdib/work", readonly: false },
    { hostPath: "/abs", guestPath: "/x", readonly: true },
  ]);
});

t.test("bad input is a UsageError", async (t) => {
  t.throws(() => parseVmArgs(["--accel", "xen", "true"], "/"), UsageError);
  t.throws(() => parseVmArgs(["--accel"], "/"), UsageError);
  t.throws(() => parseVmArgs(["--memory", "-1", "true"], "/"), UsageError);
  t.throws(() => parseVmArgs(["--share", "nocolon", "true"], "/"), UsageError);
  t.throws(() => parseVmArgs(["--bogus", "true"], "/"), UsageError);
});
