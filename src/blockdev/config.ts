// Block-device config: where it comes from (DIB_BLOCK_DEVICE_CONFIG, an element's block-device-*.yaml, DIB's
// fallback), parsing the YAML, and DIB's tree → graph conversion into a flat list of named entries.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { UsageError } from "../errors.js";

/** The node types DIB's block-device layer knows (its stevedore plugins), in level order. */
export const NODE_TYPES = ["local_loop", "partitioning", "lvm", "mkfs", "mount", "fstab"] as const;
export type NodeType = (typeof NODE_TYPES)[number];

/** One entry of the flat ("graph") config: a node type, its name, its base reference(s) and its other values. */
export interface ConfigEntry {
  readonly type: NodeType;
  readonly name: string;
  /** DIB's `base`: the parent node's name (a list for lvm vgs); undefined for local_loop. */
  readonly base: unknown;
  /** Every other key of the entry, as written (partitions included for `partitioning`). */
  readonly values: Readonly<Record<string, unknown>>;
}

export interface BlockDeviceConfig {
  /** Where the config came from, for messages: `DIB_BLOCK_DEVICE_CONFIG`, a file path, or `built-in fallback`. */
  readonly source: string;
  readonly entries: readonly ConfigEntry[];
}

/** DIB's config when no element brings one (lib/common-functions, block_device_create_config_file). */
export const FALLBACK_CONFIG_YAML = `- local_loop:
    name: image0
    mkfs:
      name: mkfs_root
      mount:
        mount_point: /
        fstab:
          options: "defaults"
          fsck-passno: 1
`;

const SETTING = "DIB_BLOCK_DEVICE_CONFIG";

function isNodeType(key: string): key is NodeType {
  return (NODE_TYPES as readonly string[]).includes(key);
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function configError(source: string, what: string, hint: string): UsageError {
  return new UsageError(`block-device config (${source}): ${what}`, { hint });
}

/** Parses block-device YAML text (either DIB format) into the flat entry list. */
export function parseBlockDeviceConfig(text: string, source: string): BlockDeviceConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new UsageError(
      `block-device config (${source}) is not valid YAML: ${(err as Error).message.split("\n")[0]}`,
      {
        hint: `Fix the YAML in ${source}; see ${SETTING} in the README for the format (a list of single-key entries such as '- local_loop: {name: image0}').`,
        cause: err,
      },
    );
  }
  return { source, entries: configTreeToGraph(doc, source) };
}

/**
 * DIB's config_tree_to_graph: the config is a list of single-key mappings `{<node type>: {...}}`. Node types nested
 * inside an entry (the older "tree" format) become entries of their own whose `base` is the enclosing node, and a
 * missing `name` becomes `<type>_<base>`; partitions of a `partitioning` entry take its base. A flat ("graph")
 * config passes through unchanged. Unlike DIB, parents come before their children in the result.
 */
export function configTreeToGraph(doc: unknown, source: string): ConfigEntry[] {
  if (doc === null || doc === undefined) {
    throw configError(source, "is empty", `Give at least a local_loop, a mkfs and a mount of "/" (see ${SETTING}).`);
  }
  if (!Array.isArray(doc)) {
    throw configError(
      source,
      `must be a list of entries, got a ${isMapping(doc) ? "mapping" : typeof doc}`,
      "Write each node as a list item with one key, e.g. '- local_loop:' then its values indented below. " +
        "The pre-2.0 DIB format (a mapping of node types) is not supported.",
    );
  }
  const out: ConfigEntry[] = [];
  doc.forEach((item, i) => {
    if (!isMapping(item)) {
      throw configError(source, `entry ${i + 1} is not a mapping`, "Each list item must be '<node type>: {values}'.");
    }
    const keys = Object.keys(item);
    if (keys.length !== 1) {
      throw configError(
        source,
        `entry ${i + 1} has ${keys.length} keys (${keys.join(", ")}); a top-level entry must have exactly one`,
        "Start a new list item ('- ') for each node, or nest child nodes inside their parent's values.",
      );
    }
    const key = keys[0] as string;
    recurse(key, item[key], undefined, source, out, `entry ${i + 1}`);
  });
  return out;
}

function recurse(
  key: string,
  raw: unknown,
  parentName: string | undefined,
  source: string,
  out: ConfigEntry[],
  where: string,
): void {
  if (!isNodeType(key)) {
    throw configError(
      source,
      `${where}: unknown node type '${key}'`,
      `Node types are: ${NODE_TYPES.join(", ")}. Check the spelling of '${key}'.`,
    );
  }
  const values = raw === null || raw === undefined ? {} : raw;
  if (!isMapping(values)) {
    throw configError(
      source,
      `${where}: the values of '${key}' must be a mapping`,
      `Write '${key}:' followed by indented 'name: ...' lines.`,
    );
  }
  const base = "base" in values ? values.base : parentName;
  let name: string;
  if (values.name !== undefined) {
    if (typeof values.name !== "string" || values.name === "") {
      throw configError(
        source,
        `${where}: '${key}' has a name that is not a string`,
        'Quote the name, e.g. name: "root".',
      );
    }
    name = values.name;
  } else if (typeof base === "string") {
    name = `${key}_${base}`;
  } else {
    throw configError(
      source,
      `${where}: '${key}' has no name and no base to derive one from`,
      `Add 'name: ...' to this ${key} entry.`,
    );
  }
  const own: Record<string, unknown> = {};
  const children: Array<[string, unknown, string]> = [];
  for (const [k, v] of Object.entries(values)) {
    if (k === "name" || k === "base") continue;
    if (k === "partitions" && key === "partitioning") {
      own.partitions = partitionsOf(v, base, name, source, children);
    } else if (isNodeType(k)) {
      children.push([k, v, name]);
    } else {
      own[k] = v;
    }
  }
  out.push({ type: key, name, base, values: own });
  for (const [k, v, parent] of children) recurse(k, v, parent, source, out, `${key} '${name}'`);
}

/** Partitions stay in their `partitioning` entry; node types nested in a partition are split out with it as base. */
function partitionsOf(
  raw: unknown,
  base: unknown,
  tableName: string,
  source: string,
  children: Array<[string, unknown, string]>,
): Record<string, unknown>[] {
  if (!Array.isArray(raw)) {
    throw configError(
      source,
      `partitioning '${tableName}': 'partitions' must be a list`,
      "Write each partition as a list item '- name: ...'.",
    );
  }
  return raw.map((p, i) => {
    if (!isMapping(p) || typeof p.name !== "string" || p.name === "") {
      throw configError(
        source,
        `partitioning '${tableName}': partition ${i + 1} has no name`,
        "Give every partition a 'name:'; it is how mkfs and lvm entries refer to it.",
      );
    }
    const part: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(p)) {
      if (isNodeType(k)) children.push([k, v, p.name]);
      else part[k] = v;
    }
    part.base = base;
    return part;
  });
}

/** An element as the resolver hands it over: its name and directory. */
export interface ElementDir {
  readonly name: string;
  readonly path: string;
}

export interface ConfigSourceInput {
  /** The value of DIB_BLOCK_DEVICE_CONFIG, if set: inline YAML, or `file://PATH`. */
  readonly dibBlockDeviceConfig?: string | undefined;
  /** The resolved elements, in the (deterministic) order the resolver produced them. */
  readonly elements: readonly ElementDir[];
  /** DIB's ARCH (amd64, arm64, ppc64le, ...): an element's block-device-ARCH.yaml wins over its default. */
  readonly arch: string;
}

/** Where the config will come from, decided before anything is read. */
export type ConfigSource =
  | { readonly kind: "file"; readonly path: string; readonly label: string }
  | { readonly kind: "inline"; readonly text: string; readonly label: string }
  | { readonly kind: "fallback"; readonly text: string; readonly label: string };

/** Candidate files per element, in DIB's order: the architecture's file, then block-device-default.yaml. */
export function elementConfigCandidates(input: ConfigSourceInput): string[] {
  const archFile = ["ppc64le", "ppc64el"].includes(input.arch)
    ? "block-device-ppc64el.yaml" // DIB: both spellings of the architecture use the ppc64el file
    : `block-device-${input.arch}.yaml`;
  return input.elements.flatMap((e) => [join(e.path, archFile), join(e.path, "block-device-default.yaml")]);
}

/**
 * DIB's precedence (block_device_create_config_file): DIB_BLOCK_DEVICE_CONFIG as `file://PATH`, else as inline
 * YAML, else the first element (in resolver order, where DIB's order is a hash order) with a
 * block-device-ARCH.yaml or block-device-default.yaml, else DIB's built-in fallback (one unpartitioned filesystem).
 * `exists` is the only effect, injected.
 */
export function selectConfigSource(input: ConfigSourceInput, exists: (path: string) => boolean): ConfigSource {
  const env = input.dibBlockDeviceConfig;
  if (env?.startsWith("file://")) {
    const path = env.slice("file://".length);
    return { kind: "file", path, label: `${SETTING}=${env}` };
  }
  if (env !== undefined && env !== "") return { kind: "inline", text: env, label: SETTING };
  for (const path of elementConfigCandidates(input)) {
    if (exists(path)) return { kind: "file", path, label: path };
  }
  return { kind: "fallback", text: FALLBACK_CONFIG_YAML, label: "built-in fallback" };
}

async function fileExists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Finds, reads and parses the block-device config (the effectful edge of this module). */
export async function loadBlockDeviceConfig(input: ConfigSourceInput): Promise<BlockDeviceConfig> {
  const present = new Set<string>();
  for (const p of elementConfigCandidates(input)) if (await fileExists(p)) present.add(p);
  const src = selectConfigSource(input, (p) => present.has(p));
  if (src.kind !== "file") return parseBlockDeviceConfig(src.text, src.label);
  let text: string;
  try {
    text = await readFile(src.path, "utf8");
  } catch (err) {
    const fromEnv = input.dibBlockDeviceConfig?.startsWith("file://");
    throw new UsageError(
      `cannot read block-device config ${src.path}${fromEnv ? ` (from ${SETTING})` : ""}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      {
        hint: fromEnv
          ? `${SETTING}=file://PATH needs an existing, readable file; use an absolute path, or unset ${SETTING} to use the elements' default.`
          : "Check the element's block-device YAML file is readable.",
        cause: err,
      },
    );
  }
  return parseBlockDeviceConfig(text, src.label);
}
