/**
 * effect-tenancy: multi-tenancy as a type-checked part of an Effect program.
 *
 * The package root re-exports the modules that depend on `effect` alone.
 * Backends and integrations (`TenantStore/Sql`, `TenantResolver`, ...) are
 * imported by their subpath, so their optional peers are loaded only when used.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Health from "./Health.js"

/**
 * @since 0.1.0
 */
export * as Rate from "./Rate.js"

/**
 * @since 0.1.0
 */
export * as TenancyConfig from "./TenancyConfig.js"

/**
 * @since 0.1.0
 */
export * as Tenant from "./Tenant.js"

/**
 * @since 0.1.0
 */
export * as TenantApiKey from "./TenantApiKey.js"

/**
 * @since 0.1.0
 */
export * as TenantContext from "./TenantContext.js"

/**
 * @since 0.1.0
 */
export * as TenantError from "./TenantError.js"

/**
 * @since 0.1.0
 */
export * as TenantLayer from "./TenantLayer.js"

/**
 * @since 0.1.0
 */
export * as TenantRegistry from "./TenantRegistry.js"

/**
 * @since 0.1.0
 */
export * as TenantStore from "./TenantStore.js"

/**
 * @since 0.1.0
 */
export * as Throttle from "./Throttle.js"

/**
 * @since 0.1.0
 */
export * as ThrottleBackend from "./ThrottleBackend.js"
