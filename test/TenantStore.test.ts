import { layerMemory } from "effect-tenancy/TenantStore"
import { suite } from "./suites/TenantStoreSuite.js"

suite("memory", layerMemory)
