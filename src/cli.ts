// Command-line entry: argv → subcommand; renders results and errors. The only module that prints.
process.stdout.write("vmdib: under construction\n");
