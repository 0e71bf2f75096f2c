// Tests the pure parts of bench/ready.ts: what libguestfs-test-tool's output says about its launch, and the pool file
// name of the kernel package.
import t from "tap";
import { debFileName, parseLibguestfsTimeline } from "../../bench/ready.js";

const lines = (pairs: [number, string][]) => pairs.map(([t, text]) => ({ t, text }));

t.test("a successful run: launch, supermin build, package count", async (t) => {
  const tl = parseLibguestfsTimeline(
    lines([
      [5, "Launching appliance, timeout set to 600 seconds."],
      [10, "libguestfs: begin building supermin appliance"],
      [900, "supermin: build: 214 packages, including dependencies"],
      [4100, "libguestfs: finished building supermin appliance"],
      [30_000, "libguestfs: appliance is up"],
      [30_001, "Guest launched OK."],
      [38_000, "===== TEST FINISHED OK ====="],
    ]),
  );
  t.same(tl, { launchMs: 30_001, superminMs: 4090, packages: 214, ok: true });
});

t.test("a failed run has no launch time and is not ok", async (t) => {
  const tl = parseLibguestfsTimeline(
    lines([
      [10, "libguestfs: begin building supermin appliance"],
      [700, "supermin: error: lstat: No such file or directory: /lib/modules"],
    ]),
  );
  t.same(tl, { ok: false });
});

t.test("without the test tool's own line, the library's 'appliance is up' counts", async (t) => {
  t.equal(parseLibguestfsTimeline(lines([[1234, "libguestfs: appliance is up"]])).launchMs, 1234);
});

t.test("debFileName drops the epoch like the pool's file names", async (t) => {
  t.equal(
    debFileName("linux-image-6.1.0-50-amd64", "6.1.176-1", "amd64"),
    "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb",
  );
  t.equal(debFileName("libguestfs0", "1:1.48.6-2", "amd64"), "libguestfs0_1.48.6-2_amd64.deb");
});
