import * as path from "node:path"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    alias: [
      { find: /^effect-tenancy$/, replacement: path.resolve(import.meta.dirname, "src/index.ts") },
      { find: /^effect-tenancy\/(.*)$/, replacement: path.resolve(import.meta.dirname, "src/$1.ts") }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    sequence: { concurrent: false }
  }
})
