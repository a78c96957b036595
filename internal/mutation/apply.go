package mutation

import (
	"fmt"
	"go/scanner"
	"go/token"
)

// swaps is gremlins v0.6.0's table (internal/engine/mappings.go): for each mutator, the token it
// replaces and the token it writes.
var swaps = map[string]map[token.Token]token.Token{
	"ARITHMETIC_BASE":       {token.ADD: token.SUB, token.MUL: token.QUO, token.QUO: token.MUL, token.REM: token.MUL, token.SUB: token.ADD},
	"CONDITIONALS_BOUNDARY": {token.GEQ: token.GTR, token.GTR: token.GEQ, token.LEQ: token.LSS, token.LSS: token.LEQ},
	"CONDITIONALS_NEGATION": {
		token.EQL: token.NEQ, token.GEQ: token.LSS, token.GTR: token.LEQ,
		token.LEQ: token.GTR, token.LSS: token.GEQ, token.NEQ: token.EQL,
	},
	"INCREMENT_DECREMENT": {token.DEC: token.INC, token.INC: token.DEC},
	"INVERT_ASSIGNMENTS": {
		token.ADD_ASSIGN: token.SUB_ASSIGN, token.MUL_ASSIGN: token.QUO_ASSIGN, token.QUO_ASSIGN: token.MUL_ASSIGN,
		token.REM_ASSIGN: token.REM_ASSIGN, token.SUB_ASSIGN: token.ADD_ASSIGN,
	},
	"INVERT_BITWISE": {
		token.AND: token.OR, token.OR: token.AND, token.XOR: token.AND,
		token.AND_NOT: token.AND, token.SHL: token.SHR, token.SHR: token.SHL,
	},
	"INVERT_BWASSIGN": {
		token.AND_ASSIGN: token.OR_ASSIGN, token.OR_ASSIGN: token.AND_ASSIGN, token.XOR_ASSIGN: token.AND_ASSIGN,
		token.AND_NOT_ASSIGN: token.AND_ASSIGN, token.SHL_ASSIGN: token.SHR_ASSIGN, token.SHR_ASSIGN: token.SHL_ASSIGN,
	},
	"INVERT_LOGICAL":   {token.LAND: token.LOR, token.LOR: token.LAND},
	"INVERT_LOOPCTRL":  {token.BREAK: token.CONTINUE, token.CONTINUE: token.BREAK},
	"INVERT_NEGATIVES": {token.SUB: token.ADD},
	"REMOVE_SELF_ASSIGNMENTS": {
		token.ADD_ASSIGN: token.ASSIGN, token.AND_ASSIGN: token.ASSIGN, token.AND_NOT_ASSIGN: token.ASSIGN,
		token.MUL_ASSIGN: token.ASSIGN, token.OR_ASSIGN: token.ASSIGN, token.QUO_ASSIGN: token.ASSIGN,
		token.REM_ASSIGN: token.ASSIGN, token.SHL_ASSIGN: token.ASSIGN, token.SHR_ASSIGN: token.ASSIGN,
		token.SUB_ASSIGN: token.ASSIGN, token.XOR_ASSIGN: token.ASSIGN,
	},
}

// Apply returns src with mutant m made: the token at m's line and byte column swapped the way
// gremlins swaps it. It fails, naming the position, when no token starts there or the token is
// not one m's mutator changes — the report then belongs to another version of the file.
func Apply(src []byte, m Mutation) ([]byte, error) {
	table, ok := swaps[m.Type]
	if !ok {
		return nil, fmt.Errorf("mutant at %d:%d: unknown mutator %q", m.Line, m.Column, m.Type)
	}
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(src))
	var s scanner.Scanner
	// Scan errors are left to the compiler: a file gremlins mutated compiled.
	s.Init(file, src, nil, scanner.ScanComments)
	for {
		pos, tok, _ := s.Scan()
		if tok == token.EOF {
			return nil, fmt.Errorf("mutant %s at %d:%d: no token starts there", m.Type, m.Line, m.Column)
		}
		p := fset.Position(pos)
		if p.Line < m.Line || (p.Line == m.Line && p.Column < m.Column) {
			continue
		}
		if p.Line != m.Line || p.Column != m.Column {
			return nil, fmt.Errorf("mutant %s at %d:%d: no token starts there", m.Type, m.Line, m.Column)
		}
		to, ok := table[tok]
		if !ok {
			return nil, fmt.Errorf("mutant %s at %d:%d: the token there is %q, which %s does not change", m.Type, m.Line, m.Column, tok, m.Type)
		}
		off := p.Offset
		out := make([]byte, 0, len(src)+len(to.String()))
		out = append(out, src[:off]...)
		out = append(out, to.String()...)
		out = append(out, src[off+len(tok.String()):]...)
		return out, nil
	}
}
