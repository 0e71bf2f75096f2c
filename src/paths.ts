// Where vmdib keeps things on the host: the per-user cache directory and the shipped guest/ and elements/ trees.
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Root of the installed package (the directory holding package.json, guest/ and elements/). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const GUEST_DIR = join(PACKAGE_ROOT, "guest");
export const BUILTIN_ELEMENTS_DIR = join(PACKAGE_ROOT, "elements");

/** The user's cache directory: $VMDIB_CACHE_DIR, else XDG on Linux, ~/Library/Caches on macOS. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string {
  if (env.VMDIB_CACHE_DIR) return resolve(env.VMDIB_CACHE_DIR);
  const home = env.HOME ?? homedir();
  if (platform === "darwin") return join(home, "Library", "Caches", "vmdib");
  return join(env.XDG_CACHE_HOME || join(home, ".cache"), "vmdib");
}
