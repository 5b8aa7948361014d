// Package dns keeps DNS in step with the inventory in two steps a person can
// check: `dns plan` computes the records the inventory implies (rules in
// config: A/AAAA per host, round-robin sets and CNAMEs per role or backend,
// PTRs in reverse zones), diffs them with what the zone holds, and stores the
// plan in KV sb_dns_plans; `dns apply <plan>` applies exactly that plan, and
// only if the zone is still what the plan saw.
//
// Only records switchboard owns are touched: a name is owned when it carries
// an ownership TXT record (_sb-owner.<name>, as external-dns does) or matches
// a configured pattern. MX, TXT and hand-made names are left alone.
//
// Providers sit behind the small Provider interface: rfc2136 (AXFR, UPDATE
// with prerequisites, TSIG) and zonefile (BIND zone files, the default). A
// new provider is one package that passes providertest.
package dns
