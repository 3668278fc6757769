from kd2edge.cli import main

main()
