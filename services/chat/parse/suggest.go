package parse

import (
	"cmp"
	"slices"
	"strings"
)

// maxSuggestInput bounds the names Suggest compares, so that a pasted
// paragraph costs no more than a typo.
const maxSuggestInput = 100

// Suggest returns up to three of candidates that name was probably meant to
// be, best first: those within an edit distance of 2 (insertions,
// deletions, substitutions and swaps of neighbours, ignoring case; 1 for
// names of three letters or fewer, where two edits make another word) and
// those sharing a prefix of at least 3 characters with it. Words both start
// with do not count towards the prefix, so "lb drian" shares nothing with
// "lb add". A candidate that name abbreviates ("dep" for "deploy") ranks
// like a one-letter typo. Ties go to the longer shared prefix, then to the
// order of candidates.
func Suggest(name string, candidates []string) []string {
	n := []rune(strings.ToLower(name))
	if len(n) == 0 || len(n) > maxSuggestInput {
		return nil
	}
	type match struct {
		cand          string
		dist, prefix  int
		order, length int
	}
	var matches []match
	seen := make(map[string]bool, len(candidates))
	for i, c := range candidates {
		if seen[c] {
			continue
		}
		seen[c] = true
		r := []rune(strings.ToLower(c))
		p := wordPrefix(n, r)
		d := 3 // "too far" unless computed below
		if abs(len(n)-len(r)) <= 2 && len(r) <= maxSuggestInput {
			d = distance(n, r)
		}
		maxDist := 2
		if len(n) <= 3 {
			maxDist = 1
		}
		// Replacing every character is a different word, not a typo.
		near := d <= maxDist && d < max(len(n), len(r))
		if !near && p < 3 {
			continue
		}
		if len(n) >= 3 && commonPrefix(n, r) == len(n) {
			d = min(d, 1)
		}
		matches = append(matches, match{cand: c, dist: d, prefix: p, order: i, length: len(r)})
	}
	slices.SortStableFunc(matches, func(a, b match) int {
		return cmp.Or(
			cmp.Compare(a.dist, b.dist),
			cmp.Compare(b.prefix, a.prefix),
			cmp.Compare(a.order, b.order),
		)
	})
	var out []string
	for _, m := range matches[:min(3, len(matches))] {
		out = append(out, m.cand)
	}
	return out
}

// distance is the optimal string alignment distance between a and b: the
// Levenshtein distance where swapping two neighbours costs one edit.
func distance(a, b []rune) int {
	// Three rows are enough: the swap looks two rows back.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// wordPrefix returns the length of the prefix a and b share after the
// whole words they share: "lb drain" and "lb drian" share "dr", 2.
func wordPrefix(a, b []rune) int {
	p := commonPrefix(a, b)
	start := 0
	for i := range p {
		if a[i] == ' ' {
			start = i + 1
		}
	}
	return p - start
}

// commonPrefix returns the number of leading runes a and b share.
func commonPrefix(a, b []rune) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// abs returns the absolute value of x.
func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
