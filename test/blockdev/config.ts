import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import {
  type ConfigEntry,
  configTreeToGraph,
  FALLBACK_CONFIG_YAML,
  loadBlockDeviceConfig,
  parseBlockDeviceConfig,
  selectConfigSource,
} from "../../src/blockdev/config.js";
import { UsageError } from "../../src/errors.js";

/** Debian's python3-diskimage-builder: its test configs and elements are our reference fixtures. */
export const DIB_DIR = "/usr/lib/python3/dist-packages/diskimage_builder";
const DIB_CONFIGS = join(DIB_DIR, "block_device", "tests", "config");
const haveDib = existsSync(DIB_CONFIGS);

function dibFixture(name: string): string {
  return readFileSync(join(DIB_CONFIGS, name), "utf8");
}

/** Our entries in DIB's graph shape ({type: {name, base, ...}}), sorted, for comparing with DIB's output. */
function asDibGraph(entries: readonly ConfigEntry[]): string[] {
  return entries
    .map((e) => ({ [e.type]: { name: e.name, ...(e.base === undefined ? {} : { base: e.base }), ...e.values } }))
    .map((x) => JSON.stringify(x, Object.keys(flattenKeys(x)).sort()))
    .sort();
}

function flattenKeys(v: unknown, acc: Record<string, true> = {}): Record<string, true> {
  if (Array.isArray(v)) for (const x of v) flattenKeys(x, acc);
  else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      acc[k] = true;
      flattenKeys(x, acc);
    }
  }
  return acc;
}

function thrown(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (e) {
    if (e instanceof UsageError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

async function rejected(p: Promise<unknown>): Promise<UsageError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof UsageError) return e;
    throw e;
  }
  throw new Error("did not reject");
}

t.test(
  "tree and graph formats give the same entries (DIB's own fixture pairs)",
  { skip: !haveDib && "no DIB" },
  async (t) => {
    const pairs: Array<[string, string]> = [
      ["simple_tree.yaml", "simple_graph.yaml"],
      ["deep_tree.yaml", "deep_graph.yaml"],
      ["multiple_partitions_tree.yaml", "multiple_partitions_graph.yaml"],
      ["lvm_tree.yaml", "lvm_graph.yaml"],
    ];
    for (const [tree, graph] of pairs) {
      const a = parseBlockDeviceConfig(dibFixture(tree), tree).entries;
      const b = parseBlockDeviceConfig(dibFixture(graph), graph).entries;
      t.same(asDibGraph(a), asDibGraph(b), `${tree} = ${graph}`);
    }
  },
);

t.test("tree conversion names nodes <type>_<base> and puts parents first", async (t) => {
  const { entries } = parseBlockDeviceConfig(
    `- local_loop:
    name: image0
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [ boot, primary ]
        size: 100%
        mkfs:
          mount:
            mount_point: /
            fstab:
              options: "defaults"
              fsck-passno: 1
`,
    "test",
  );
  t.same(
    entries.map((e) => [e.type, e.name, e.base]),
    [
      ["local_loop", "image0", undefined],
      ["partitioning", "partitioning_image0", "image0"],
      ["mkfs", "mkfs_root", "root"],
      ["mount", "mount_mkfs_root", "mkfs_root"],
      ["fstab", "fstab_mount_mkfs_root", "mount_mkfs_root"],
    ],
  );
  t.same(entries[1]?.values.partitions, [{ name: "root", flags: ["boot", "primary"], size: "100%", base: "image0" }]);
});

const dibPython = (() => {
  try {
    execFileSync("/usr/bin/python3", ["-c", "import diskimage_builder.block_device.config"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

t.test(
  "matches DIB's config_tree_to_graph on every DIB config it accepts",
  { skip: !dibPython && "DIB's python module is not importable" },
  async (t) => {
    const files = [
      ...readdirSync(DIB_CONFIGS).map((f) => join(DIB_CONFIGS, f)),
      ...["block-device-mbr", "block-device-gpt", "block-device-efi"].map((e) =>
        join(DIB_DIR, "elements", e, "block-device-default.yaml"),
      ),
    ].filter((f) => f.endsWith(".yaml"));
    const script = [
      "import json, sys, yaml",
      "from diskimage_builder.block_device.config import config_tree_to_graph",
      "out = {}",
      "for f in sys.argv[1:]:",
      "    try:",
      "        out[f] = config_tree_to_graph(yaml.safe_load(open(f)))",
      "    except Exception as e:",
      "        out[f] = None",
      "print(json.dumps(out))",
    ].join("\n");
    const dib = JSON.parse(execFileSync("/usr/bin/python3", ["-c", script, ...files], { encoding: "utf8" })) as Record<
      string,
      unknown[] | null
    >;
    let compared = 0;
    for (const f of files) {
      const theirs = dib[f];
      // DIB accepts plugin names of its own test plugins (test_a, test_b); those are unknown node types here.
      if (theirs === null || /cmd_create|rollback/.test(f)) {
        t.throws(() => parseBlockDeviceConfig(readFileSync(f, "utf8"), f), UsageError, `both reject ${f}`);
        continue;
      }
      const ours = asDibGraph(parseBlockDeviceConfig(readFileSync(f, "utf8"), f).entries);
      const sorted = (theirs ?? []).map((x) => JSON.stringify(x, Object.keys(flattenKeys(x)).sort())).sort();
      t.same(ours, sorted, `same graph for ${f}`);
      compared++;
    }
    t.ok(compared >= 15, `compared ${compared} configs`);
  },
);

t.test("structural errors are UsageErrors that say where and what to do", async (t) => {
  const cases: Array<[string, RegExp]> = [
    ["- this_is_not_a_plugin_name:\n    foo: bar\n", /unknown node type 'this_is_not_a_plugin_name'/],
    ["- mkfs:\n    name: a\n    base: b\n  mount:\n    name: c\n", /has 2 keys/],
    ["local_loop:\n  image0: {}\n", /must be a list of entries/],
    ["", /is empty/],
    ["- 42\n", /entry 1 is not a mapping/],
    ["- local_loop: [1, 2]\n", /must be a mapping/],
    ["- mkfs:\n    type: ext4\n", /no name and no base/],
    ["- partitioning:\n    base: image0\n    partitions:\n      - size: 100%\n", /partition 1 has no name/],
  ];
  for (const [yaml, re] of cases) {
    const err = thrown(() => parseBlockDeviceConfig(yaml, "DIB_BLOCK_DEVICE_CONFIG"));
    t.match(err.message, re, re.source);
    t.match(err.message, /DIB_BLOCK_DEVICE_CONFIG/);
    t.ok(err.hint, "has a hint");
    t.equal(err.exitCode, 2);
  }
  const yamlErr = thrown(() => parseBlockDeviceConfig("- local_loop: {name: [unclosed\n", "DIB_BLOCK_DEVICE_CONFIG"));
  t.match(yamlErr.message, /DIB_BLOCK_DEVICE_CONFIG.*not valid YAML/);
});

t.test("configTreeToGraph is usable on already-parsed documents", async (t) => {
  t.equal(configTreeToGraph([{ local_loop: { name: "image0" } }], "x").length, 1);
});

t.test("source precedence: file://, inline, element (arch first), fallback", async (t) => {
  const elements = [
    { name: "vm", path: "/e/vm" },
    { name: "block-device-gpt", path: "/e/gpt" },
    { name: "block-device-mbr", path: "/e/mbr" },
  ];
  const files = new Set([
    "/e/gpt/block-device-default.yaml",
    "/e/mbr/block-device-default.yaml",
    "/e/mbr/block-device-amd64.yaml",
  ]);
  const exists = (p: string) => files.has(p);
  t.same(selectConfigSource({ dibBlockDeviceConfig: "file:///x/y.yaml", elements, arch: "amd64" }, exists), {
    kind: "file",
    path: "/x/y.yaml",
    label: "DIB_BLOCK_DEVICE_CONFIG=file:///x/y.yaml",
  });
  t.same(selectConfigSource({ dibBlockDeviceConfig: "- local_loop: {}", elements, arch: "amd64" }, exists), {
    kind: "inline",
    text: "- local_loop: {}",
    label: "DIB_BLOCK_DEVICE_CONFIG",
  });
  t.same(
    selectConfigSource({ dibBlockDeviceConfig: "", elements, arch: "amd64" }, exists),
    {
      kind: "file",
      path: "/e/gpt/block-device-default.yaml",
      label: "/e/gpt/block-device-default.yaml",
    },
    "empty variable = unset; first element in order wins",
  );
  t.same(
    selectConfigSource({ elements: elements.slice(2), arch: "amd64" }, exists).label,
    "/e/mbr/block-device-amd64.yaml",
    "arch file first",
  );
  files.add("/e/mbr/block-device-ppc64el.yaml");
  t.same(
    selectConfigSource({ elements: elements.slice(2), arch: "ppc64le" }, exists).label,
    "/e/mbr/block-device-ppc64el.yaml",
    "ppc64le uses the ppc64el file",
  );
  const fb = selectConfigSource({ elements: [], arch: "amd64" }, exists);
  t.equal(fb.kind, "fallback");
  t.equal(fb.kind === "fallback" && fb.text, FALLBACK_CONFIG_YAML);
});

t.test("loadBlockDeviceConfig reads files, and names DIB_BLOCK_DEVICE_CONFIG when it cannot", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-bd-"));
  t.teardown(() => execFileSync("rm", ["-rf", dir]));
  const cfg = join(dir, "my config.yaml");
  writeFileSync(cfg, "- local_loop:\n    name: image0\n");
  const fromFile = await loadBlockDeviceConfig({ dibBlockDeviceConfig: `file://${cfg}`, elements: [], arch: "amd64" });
  t.equal(fromFile.entries[0]?.name, "image0");
  t.match(fromFile.source, /DIB_BLOCK_DEVICE_CONFIG=file:/);

  const missing = await rejected(
    loadBlockDeviceConfig({ dibBlockDeviceConfig: `file://${dir}/nope.yaml`, elements: [], arch: "amd64" }),
  );
  t.match(missing.message, /DIB_BLOCK_DEVICE_CONFIG/);
  t.match(missing.message, /ENOENT/);
  t.match(missing.hint, /DIB_BLOCK_DEVICE_CONFIG=file:\/\/PATH/);

  writeFileSync(join(dir, "bad.yaml"), "- local_loop: [\n");
  const bad = await rejected(
    loadBlockDeviceConfig({ dibBlockDeviceConfig: `file://${dir}/bad.yaml`, elements: [], arch: "amd64" }),
  );
  t.match(bad.message, /DIB_BLOCK_DEVICE_CONFIG=file:.*not valid YAML/);

  const inline = await loadBlockDeviceConfig({
    dibBlockDeviceConfig: "- local_loop:\n    name: disk\n",
    elements: [],
    arch: "amd64",
  });
  t.equal(inline.entries[0]?.name, "disk");

  const el = join(dir, "el");
  mkdirSync(el);
  writeFileSync(join(el, "block-device-default.yaml"), "- local_loop:\n    name: fromelement\n");
  const fromElement = await loadBlockDeviceConfig({ elements: [{ name: "el", path: el }], arch: "amd64" });
  t.equal(fromElement.entries[0]?.name, "fromelement");

  const fallback = await loadBlockDeviceConfig({ elements: [], arch: "amd64" });
  t.same(
    fallback.entries.map((e) => e.name),
    ["image0", "mkfs_root", "mount_mkfs_root", "fstab_mount_mkfs_root"],
  );
});
