// Which Debian mirror to use: DIB_DISTRIBUTION_MIRROR, else the host's apt sources (one-line and deb822), else an error.
import { readdirSync, readFileSync } from "node:fs";
import { UsageError } from "./errors.js";

/** The host files mirror resolution reads, injected so tests need no /etc/apt. */
export interface HostFiles {
  /** File contents, or undefined when it does not exist or cannot be read. */
  readFile(path: string): string | undefined;
  /** Names in a directory, or [] when it does not exist. */
  listDir(path: string): string[];
}

export const REAL_HOST_FILES: HostFiles = {
  readFile(path) {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return undefined;
    }
  },
  listDir(path) {
    try {
      return readdirSync(path).sort();
    } catch {
      return [];
    }
  },
};

/** One `deb` source entry, whichever file format it came from. */
export interface AptSource {
  uris: string[];
  suites: string[];
  components: string[];
  file: string;
}

const SOURCES_LIST = "/etc/apt/sources.list";
const SOURCES_DIR = "/etc/apt/sources.list.d";

/** The mirror URL (no trailing slash) vmdib downloads Debian packages from. */
export function resolveMirror(env: NodeJS.ProcessEnv, host: HostFiles = REAL_HOST_FILES): string {
  const fromEnv = env.DIB_DISTRIBUTION_MIRROR?.trim();
  if (fromEnv) {
    if (!/^https?:\/\/[^/]/.test(fromEnv)) {
      throw new UsageError(`DIB_DISTRIBUTION_MIRROR is not an http(s) URL: '${fromEnv}'`, {
        hint: "set it to the base URL of a Debian archive, the directory that holds dists/ and pool/",
      });
    }
    return stripSlash(fromEnv);
  }
  const sources = readAptSources(host);
  const main = pickDebianMain(sources);
  if (main) return main;
  throw new UsageError("no Debian mirror configured", {
    hint:
      "set DIB_DISTRIBUTION_MIRROR to the base URL of a Debian archive (the directory that holds dists/ and pool/); " +
      `none was found in ${SOURCES_LIST} or ${SOURCES_DIR}/`,
  });
}

/** Every `deb` entry in sources.list, sources.list.d/*.list and sources.list.d/*.sources. */
export function readAptSources(host: HostFiles): AptSource[] {
  const out: AptSource[] = [];
  const main = host.readFile(SOURCES_LIST);
  if (main !== undefined) out.push(...parseOneLineSources(main, SOURCES_LIST));
  for (const name of host.listDir(SOURCES_DIR)) {
    const path = `${SOURCES_DIR}/${name}`;
    if (name.endsWith(".list")) {
      const text = host.readFile(path);
      if (text !== undefined) out.push(...parseOneLineSources(text, path));
    } else if (name.endsWith(".sources")) {
      const text = host.readFile(path);
      if (text !== undefined) out.push(...parseDeb822Sources(text, path));
    }
  }
  return out;
}

/** `deb [options] uri suite component...` lines; `deb-src` and comments are skipped. */
export function parseOneLineSources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    // Options in brackets may contain spaces ("[ arch=amd64 signed-by=... ]"): cut them out first.
    const m = /^(\S+)\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (m?.[1] !== "deb") continue;
    out.push({ uris: [m[2] ?? ""], suites: [m[3] ?? ""], components: (m[4] ?? "").split(/\s+/).filter(Boolean), file });
  }
  return out;
}

/** deb822 stanzas (Types/URIs/Suites/Components); stanzas with `Enabled: no` are skipped. */
export function parseDeb822Sources(text: string, file: string): AptSource[] {
  const out: AptSource[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split("\n")) {
      if (line.startsWith("#") || !line.trim()) continue;
      if (/^\s/.test(line) && last) {
        fields.set(last, `${fields.get(last) ?? ""} ${line.trim()}`);
        continue;
      }
      const i = line.indexOf(":");
      if (i < 0) continue;
      last = line.slice(0, i).trim().toLowerCase();
      fields.set(last, line.slice(i + 1).trim());
    }
    const words = (k: string) => (fields.get(k) ?? "").split(/\s+/).filter(Boolean);
    if (!words("types").includes("deb")) continue;
    if ((fields.get("enabled") ?? "yes").toLowerCase() === "no") continue;
    out.push({ uris: words("uris"), suites: words("suites"), components: words("components"), file });
  }
  return out;
}

/**
 * The Debian main archive among the sources: a plain http(s) URI, with `main`, whose suites are not a security
 * suite. An entry with a bare release suite (no `-updates`/`-backports`) wins over one with only pocket suites.
 */
export function pickDebianMain(sources: AptSource[]): string | undefined {
  const candidates: { uri: string; score: number }[] = [];
  for (const s of sources) {
    if (!s.components.includes("main")) continue;
    for (const uri of s.uris) {
      if (!/^https?:\/\//.test(uri)) continue;
      if (/security/.test(uri) || s.suites.every((suite) => /security/.test(suite))) continue;
      const bareSuite = s.suites.some((suite) => !suite.includes("-") && !suite.includes("/"));
      candidates.push({
        uri: stripSlash(uri),
        score: (bareSuite ? 2 : 0) + (/\/debian$/.test(stripSlash(uri)) ? 1 : 0),
      });
    }
  }
  candidates.sort((a, b) => b.score - a.score);
  return candidates[0]?.uri;
}

function stripSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/** A URL safe to print or store: credentials in it ("http://user:secret@host/") are replaced by "***". */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1***@");
}
