import t from "tap";
import {
  GiB,
  imageSizeBytes,
  KiB,
  MiB,
  parseImageSizeFlag,
  parseSizeSpec,
  resolveSizeSpec,
  TiB,
} from "../../src/blockdev/size.js";
import { UsageError } from "../../src/errors.js";

t.test("parseSizeSpec follows DIB's unit table: binary with i, decimal without, bare = bytes", async (t) => {
  t.same(parseSizeSpec("8MiB"), { kind: "bytes", bytes: 8 * MiB });
  t.same(parseSizeSpec("3G"), { kind: "bytes", bytes: 3e9 });
  t.same(parseSizeSpec("1800M"), { kind: "bytes", bytes: 1.8e9 });
  t.same(parseSizeSpec("1.5GiB"), { kind: "bytes", bytes: 1.5 * GiB });
  t.same(parseSizeSpec("5 GB"), { kind: "bytes", bytes: 5e9 });
  t.same(parseSizeSpec("4096"), { kind: "bytes", bytes: 4096 });
  t.same(parseSizeSpec(4096), { kind: "bytes", bytes: 4096 });
  t.same(parseSizeSpec("MiB"), { kind: "bytes", bytes: MiB }, "a unit alone is one of it, as in DIB");
  t.same(parseSizeSpec("100%"), { kind: "percent", percent: 100 });
  t.same(parseSizeSpec("5.5%"), { kind: "percent", percent: 5.5 });
  for (const bad of ["", "0", "0%", "101%", "-1G", "1e9", "12 parsecs", "1XiB", "abc", "1.2.3G", null, {}]) {
    t.equal(parseSizeSpec(bad), undefined, `rejects ${JSON.stringify(bad)}`);
  }
});

t.test("resolveSizeSpec: percentages of the free space, floored", async (t) => {
  t.equal(resolveSizeSpec({ kind: "percent", percent: 50 }, 1001), 500);
  t.equal(resolveSizeSpec({ kind: "bytes", bytes: 7 }, 1), 7);
});

t.test("parseImageSizeFlag: plain numbers are GiB as in DIB, units are binary", async (t) => {
  t.equal(parseImageSizeFlag("2", "--image-size"), 2 * GiB);
  t.equal(parseImageSizeFlag("2.5", "--image-size"), 2.5 * GiB);
  t.equal(parseImageSizeFlag("2G", "--image-size"), 2 * GiB);
  t.equal(parseImageSizeFlag("2GiB", "--image-size"), 2 * GiB);
  t.equal(parseImageSizeFlag("512M", "--image-extra-size"), 512 * MiB);
  t.equal(parseImageSizeFlag(" 512mb ", "--image-extra-size"), 512 * MiB);
  t.equal(parseImageSizeFlag("1T", "--image-size"), TiB);
  t.equal(parseImageSizeFlag("16T", "--image-size"), 16 * TiB, "16 TiB is the limit, included");
  for (const bad of ["0", "-1", "1e9", "NaN", "", "abc", "17T", "99999", "2X", "0.0000001", "Infinity"]) {
    t.throws(() => parseImageSizeFlag(bad, "--image-size"), UsageError, `rejects '${bad}'`);
  }
  const err = (() => {
    try {
      parseImageSizeFlag("0", "DIB_IMAGE_SIZE");
    } catch (e) {
      return e as UsageError;
    }
  })();
  t.match(err?.message, /DIB_IMAGE_SIZE/, "names the setting");
  t.equal(err?.exitCode, 2);
  t.ok(err?.hint);
});

t.test("imageSizeBytes: DIB's rule", async (t) => {
  const tree = 1000 * MiB;
  const duKiB = 1000 * 1024;
  const round64 = (kib: number) => Math.ceil(kib / 64) * 64 * KiB;
  t.equal(imageSizeBytes({ treeBytes: tree, rootFsType: "xfs" }), round64(Math.floor(duKiB / 0.6)), "du / 0.6");
  t.equal(
    imageSizeBytes({ treeBytes: tree, rootFsType: "ext4" }),
    round64(Math.floor(duKiB / 0.6) + 64 * 1024),
    "ext4 adds the 64 MiB journal",
  );
  t.equal(
    imageSizeBytes({ treeBytes: tree, rootFsType: "ext4", journalSizeMiB: 128 }),
    round64(Math.floor(duKiB / 0.6) + 128 * 1024),
    "--mkfs-journal-size",
  );
  t.equal(
    imageSizeBytes({ treeBytes: tree, rootFsType: "ext4", extraSize: 2 * GiB }),
    round64(duKiB + 2 * 1024 * 1024 + 64 * 1024),
    "--image-extra-size replaces the 1/0.6 headroom",
  );
  t.equal(
    imageSizeBytes({ treeBytes: tree, rootFsType: "ext4", imageSize: 4 * GiB }),
    4 * GiB,
    "--image-size wins, no journal",
  );
  t.equal(
    imageSizeBytes({ treeBytes: tree, rootFsType: "ext4", imageSize: 4 * GiB, extraSize: GiB }),
    4 * GiB,
    "extra size is ignored with --image-size, as in DIB",
  );
  t.equal(
    imageSizeBytes({ treeBytes: 0, rootFsType: "ext4", imageSize: 4 * GiB, efi: true }),
    4 * GiB + 525 * MiB,
    "EFI pad always",
  );
  t.equal(imageSizeBytes({ treeBytes: 1, rootFsType: "xfs" }), 64 * KiB, "rounded up to 64 KiB");
  t.equal(imageSizeBytes({ treeBytes: 0, rootFsType: "xfs", imageSize: 1000 * KiB }), 1024 * KiB);
  t.throws(() => imageSizeBytes({ treeBytes: Number.NaN, rootFsType: "ext4" }), RangeError);
});

t.test("a tiny ext4 tree still gets room for its journal (DIB fails there)", async (t) => {
  const bytes = imageSizeBytes({ treeBytes: 8 * 1024 * 1024, rootFsType: "ext4" });
  t.equal(bytes, 256 * 1024 * 1024, "four 64 MiB journals");
  t.equal(imageSizeBytes({ treeBytes: 8 * 1024 * 1024, rootFsType: "ext4", journalSizeMiB: 16 }), 64 * 1024 * 1024);
});
