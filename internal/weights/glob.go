package weights

import (
	"regexp"
	"strings"
)

// matcher selects files by include and exclude patterns, with fnmatch's
// rules as the hub client applies them: "*" matches any run of characters
// including "/", "?" one character, "[...]" a class; a pattern ending in "/"
// matches everything under that directory.
type matcher struct {
	include, exclude []*regexp.Regexp
}

func newMatcher(include, exclude []string) matcher {
	return matcher{include: compileGlobs(include), exclude: compileGlobs(exclude)}
}

func (m matcher) match(path string) bool {
	if len(m.include) > 0 && !anyMatch(m.include, path) {
		return false
	}
	return !anyMatch(m.exclude, path)
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func compileGlobs(globs []string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, 0, len(globs))
	for _, g := range globs {
		// regexp refuses invalid UTF-8, even quoted; no path matches such
		// bytes anyway, so they stand for U+FFFD (found by FuzzGlob).
		g = strings.ToValidUTF8(g, "\uFFFD")
		if strings.HasSuffix(g, "/") {
			g += "*"
		}
		re, err := regexp.Compile("^" + globRegexp(g) + "$")
		if err != nil {
			// A malformed class: match the pattern literally.
			re = regexp.MustCompile("^" + regexp.QuoteMeta(g) + "$")
		}
		out = append(out, re)
	}
	return out
}

// globRegexp translates an fnmatch pattern into a regular expression.
func globRegexp(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(g[i+1:], ']')
			if j < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := g[i+1 : i+1+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}
