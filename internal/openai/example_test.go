package openai_test

import (
	"fmt"

	"github.com/halyard-dev/halyard/internal/openai"
)

// Only the model's value changes; spacing, field order and the other fields
// stay as the client sent them.
func ExampleRequest_WithModel() {
	body := []byte(`{ "model" : "sql",  "messages":[{"role":"user","content":"hi"}], "temperature": 0.5 }`)
	req, perr := openai.Parse(openai.KindChat, body)
	if perr != nil {
		panic(perr)
	}
	fmt.Println(string(req.WithModel("sql-lora")))
	fmt.Printf("%q\n", req.PromptText)
	// Output:
	// { "model" : "sql-lora",  "messages":[{"role":"user","content":"hi"}], "temperature": 0.5 }
	// "user: hi\n"
}
