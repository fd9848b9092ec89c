from llast_fairseq.cli.text_prompt_bleu import main
raise SystemExit(main())
