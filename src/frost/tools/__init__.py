"""Tools around the algorithm: `frost bench` (`bench`), `frost data synth` (`synth`), `make demo` (`demo`) and the
marked blocks they write into Markdown files (`mdblock`). May import anything of frost."""
